package cniplugin

// The CNI plugin protocol (spec 1.1) as runtimes see it: the CNI_* variables each verb
// requires, the checks of the network config every verb but VERSION makes, version
// negotiation, the VERSION answer and the error JSON. It behaves as the CNI library's
// skel package, which the plugin used to link (see Main for where it differs).

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/podnet/podnet/api"
)

// CmdArgs are the arguments of one verb: the CNI_* variables and the network config.
type CmdArgs struct {
	ContainerID string // CNI_CONTAINERID
	Netns       string // CNI_NETNS
	IfName      string // CNI_IFNAME
	Args        string // CNI_ARGS
	Path        string // CNI_PATH
	// NetnsOverride is CNI_NETNS_OVERRIDE: "1" or "true" (any case) lets ADD and DEL
	// name the plugin's own network namespace.
	NetnsOverride string
	// StdinData is the network config read from stdin.
	StdinData []byte
}

// netnsOverridden reports whether CNI_NETNS_OVERRIDE allows the plugin's own namespace.
func (a *CmdArgs) netnsOverridden() bool {
	return a.NetnsOverride == "1" || strings.ToUpper(a.NetnsOverride) == "TRUE"
}

// Error is a CNI error as the plugin prints it on stdout; cniError makes every one.
type Error struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if e.Details != "" {
		return e.Msg + "; " + e.Details
	}
	return e.Msg
}

// print writes e as JSON indented by four spaces, without a final newline.
func (e *Error) print(w io.Writer) error {
	b, err := json.MarshalIndent(e, "", "    ")
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// currentVersion is the spec version of the VERSION answer's own cniVersion.
const currentVersion = "1.1.0"

// Main runs one invocation the way a runtime makes it: getenv reads the CNI_*
// variables, stdin holds the network config, results and errors go to p's Stdout and
// the about text to stderr. It returns the exit status: 0, or 1 after printing a CNI
// error. Checks run in this order, and each failure ends the invocation:
//
//   - CNI_IFNAME by api.CheckIfName (except for VERSION), so that the error names the
//     value;
//   - without CNI_COMMAND, the about text goes to stderr and Main returns 0;
//   - the variables the verb requires: CNI_CONTAINERID and CNI_IFNAME for ADD, CHECK
//     and DEL, CNI_NETNS for ADD and CHECK, CNI_PATH for all but VERSION (code 4, all
//     missing ones named); for ADD, CHECK and DEL, CNI_CONTAINERID must be a valid name
//     and CNI_IFNAME without Unicode white space (code 4);
//   - except for VERSION, which prints the supported versions without reading stdin:
//     stdin must be a JSON object whose "name" is a valid network name (codes 6, 7);
//   - the config's cniVersion (none means 0.1.0) must be one of SupportedVersions
//     (code 1, "incompatible CNI versions"); CHECK needs at least 0.4.0, GC and STATUS
//     at least 1.1.0 (code 1);
//   - then the verb runs; an unknown CNI_COMMAND is code 4.
//
// ADD and DEL refuse (code 8) a CNI_NETNS that is the plugin's own network namespace
// unless CNI_NETNS_OVERRIDE is set, as the library's skel did; ADD checks before
// attaching, where skel checked after the attachment was made and its result printed.
func (p *Plugin) Main(getenv func(string) string, stdin io.Reader, stderr io.Writer) int {
	err := p.dispatch(getenv, stdin, stderr)
	if err == nil {
		return 0
	}
	if werr := err.print(p.stdout()); werr != nil {
		fmt.Fprintf(stderr, "podnet-cni: write error JSON to stdout: %v\n", werr)
	}
	return 1
}

func (p *Plugin) dispatch(getenv func(string) string, stdin io.Reader, stderr io.Writer) *Error {
	cmd := getenv("CNI_COMMAND")
	if cmd != "VERSION" {
		if err := CheckIfName(getenv("CNI_IFNAME")); err != nil {
			return err
		}
	}
	if cmd == "" {
		fmt.Fprintln(stderr, About)
		fmt.Fprintf(stderr, "CNI protocol versions supported: %s\n", strings.Join(SupportedVersions, ", "))
		return nil
	}
	args, err := readArgs(cmd, getenv, stdin)
	if err != nil {
		return err
	}
	switch cmd {
	case "ADD":
		return call(args, p.Add)
	case "DEL":
		return call(args, p.Del)
	case "CHECK":
		return callSince(args, "0.4.0", cmd, p.Check)
	case "GC":
		return callSince(args, "1.1.0", cmd, p.GC)
	case "STATUS":
		return callSince(args, "1.1.0", cmd, p.Status)
	case "VERSION":
		if err := printVersion(p.stdout()); err != nil {
			return cniError(api.Errorf(api.CodeIOFailure, "%v", err), false)
		}
		return nil
	}
	return cniError(api.Errorf(api.CodeInvalidEnv, "unknown CNI_COMMAND: %v", cmd), false)
}

// cniVars are the variables the plugin reads, in the order they are checked, with the
// verbs that require each.
var cniVars = []struct {
	name     string
	required []string
	// validate checks a value the verb requires.
	validate func(string) *Error
	// field is where the value goes; nil for CNI_COMMAND.
	field func(*CmdArgs) *string
}{
	{"CNI_COMMAND", []string{"ADD", "CHECK", "DEL", "GC", "STATUS"}, nil, nil},
	{"CNI_CONTAINERID", []string{"ADD", "CHECK", "DEL"}, checkContainerID, func(a *CmdArgs) *string { return &a.ContainerID }},
	{"CNI_NETNS", []string{"ADD", "CHECK"}, nil, func(a *CmdArgs) *string { return &a.Netns }},
	{"CNI_IFNAME", []string{"ADD", "CHECK", "DEL"}, checkIfNameRunes, func(a *CmdArgs) *string { return &a.IfName }},
	{"CNI_ARGS", nil, nil, func(a *CmdArgs) *string { return &a.Args }},
	{"CNI_PATH", []string{"ADD", "CHECK", "DEL", "GC", "STATUS"}, nil, func(a *CmdArgs) *string { return &a.Path }},
	{"CNI_NETNS_OVERRIDE", nil, nil, func(a *CmdArgs) *string { return &a.NetnsOverride }},
}

// readArgs collects the arguments of cmd (not empty): the variables, then stdin (not
// for VERSION).
func readArgs(cmd string, getenv func(string) string, stdin io.Reader) (*CmdArgs, *Error) {
	args := &CmdArgs{}
	var missing []string
	for _, v := range cniVars {
		val := getenv(v.name)
		if v.field != nil {
			*v.field(args) = val
		}
		required := slices.Contains(v.required, cmd)
		switch {
		case val == "" && required:
			missing = append(missing, v.name)
		case val != "" && required && v.validate != nil:
			if err := v.validate(val); err != nil {
				return nil, err
			}
		}
	}
	if len(missing) > 0 {
		return nil, cniError(api.Errorf(api.CodeInvalidEnv, "required env variables [%s] missing", strings.Join(missing, ",")), false)
	}
	if cmd == "VERSION" {
		return args, nil
	}
	data, err := io.ReadAll(stdin)
	if err != nil {
		return nil, cniError(api.Errorf(api.CodeIOFailure, "error reading from stdin: %v", err), false)
	}
	args.StdinData = data
	if err := checkNetworkName(data); err != nil {
		return nil, err
	}
	return args, nil
}

// checkNetworkName checks that stdin is a JSON object with a valid "name".
func checkNetworkName(stdin []byte) *Error {
	var conf struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return cniError(api.Errorf(api.CodeDecode, "error unmarshall network config: %v", err), false)
	}
	if conf.Name == "" {
		return cniError(api.Errorf(api.CodeInvalidConfig, "missing network name"), false)
	}
	if !api.ValidName(conf.Name) {
		return cniError(&api.Error{Code: api.CodeInvalidConfig, Msg: "invalid characters found in network name", Details: conf.Name}, false)
	}
	return nil
}

// checkContainerID checks a non-empty CNI_CONTAINERID.
func checkContainerID(id string) *Error {
	if !api.ValidName(id) {
		return cniError(&api.Error{Code: api.CodeInvalidEnv, Msg: "invalid characters in containerID", Details: id}, false)
	}
	return nil
}

// checkIfNameRunes refuses a CNI_IFNAME with Unicode white space. CheckIfName, which
// runs first, refuses everything else a CNI interface name must not be, and the ASCII
// white space.
func checkIfNameRunes(name string) *Error {
	if strings.IndexFunc(name, unicode.IsSpace) >= 0 {
		return cniError(api.Errorf(api.CodeInvalidEnv, "interface name contains / or : or whitespace characters"), false)
	}
	return nil
}

// call checks the config's cniVersion and runs verb.
func call(args *CmdArgs, verb func(*CmdArgs) error) *Error {
	v, err := configVersion(args.StdinData)
	if err != nil {
		return err
	}
	if !slices.Contains(SupportedVersions, v) {
		return cniError(&api.Error{Code: api.CodeIncompatibleVersion, Msg: "incompatible CNI versions",
			Details: fmt.Sprintf("config is %q, plugin supports %q", v, SupportedVersions)}, false)
	}
	if err := verb(args); err != nil {
		return cniError(err, false)
	}
	return nil
}

// callSince runs a verb that needs a config of version since or later (and a
// supported version at least as recent as the config's).
func callSince(args *CmdArgs, since, cmd string, verb func(*CmdArgs) error) *Error {
	v, err := configVersion(args.StdinData)
	if err != nil {
		return err
	}
	decodeErr := func(err error) *Error { return cniError(api.Errorf(api.CodeDecode, "%v", err), false) }
	ok, verr := versionAtLeast(v, since)
	if verr != nil {
		return decodeErr(verr)
	}
	if !ok {
		return cniError(api.Errorf(api.CodeIncompatibleVersion, "config version does not allow %s", cmd), false)
	}
	for _, supported := range SupportedVersions {
		ok, verr := versionAtLeast(supported, v)
		if verr != nil {
			return decodeErr(verr)
		}
		if ok {
			return call(args, verb)
		}
	}
	return cniError(api.Errorf(api.CodeIncompatibleVersion, "plugin version does not allow %s", cmd), false)
}

// configVersion returns the config's cniVersion, "0.1.0" when it has none.
func configVersion(stdin []byte) (string, *Error) {
	var conf struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return "", cniError(api.Errorf(api.CodeDecode, "decoding version from network config: %v", err), false)
	}
	if conf.CNIVersion == "" {
		return "0.1.0", nil
	}
	return conf.CNIVersion, nil
}

// parseVersion splits a spec version into its numbers; missing parts are 0, and ""
// is 0.1.0.
func parseVersion(v string) ([3]int, error) {
	if v == "" {
		return [3]int{0, 1, 0}, nil
	}
	parts := strings.Split(v, ".")
	if len(parts) > 3 {
		return [3]int{}, fmt.Errorf("invalid version %q: too many parts", v)
	}
	var n [3]int
	for i, part := range parts {
		x, err := strconv.Atoi(part)
		if err != nil {
			return [3]int{}, fmt.Errorf("failed to convert %s version part %q: %w", [...]string{"major", "minor", "micro"}[i], part, err)
		}
		n[i] = x
	}
	return n, nil
}

// versionAtLeast reports whether spec version v is other or later.
func versionAtLeast(v, other string) (bool, error) {
	a, err := parseVersion(v)
	if err != nil {
		return false, err
	}
	b, err := parseVersion(other)
	if err != nil {
		return false, err
	}
	return slices.Compare(a[:], b[:]) >= 0, nil
}

// printVersion writes the VERSION answer: one line of JSON.
func printVersion(w io.Writer) error {
	return json.NewEncoder(w).Encode(struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions,omitempty"`
	}{currentVersion, SupportedVersions})
}
