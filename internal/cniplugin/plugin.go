// Package cniplugin implements the podnet CNI plugin: it decodes the runtime's network
// config and CNI_* environment, forwards each verb to the podnet agent over its unix
// socket (the sandbox network namespace travels as an open descriptor) and prints the
// result or a CNI error.
//
// The package speaks the CNI protocol itself (Plugin.Main: the CNI_* variables, version
// negotiation, results in each supported spec version, the error JSON) rather than
// linking the CNI library: it is linked into the lean podnet-cni binary, which a runtime
// execs once per pod per verb, and imports only the api package and the standard
// library.
package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/podnet/podnet/api"
)

// SupportedVersions are the CNI spec versions the plugin speaks. Results are printed in
// the version the config asks for (podman 4.3 accepts up to 1.0.0).
var SupportedVersions = []string{"0.4.0", "1.0.0", "1.1.0"}

// About is printed by the binary when it runs without CNI_COMMAND.
const About = "podnet-cni: CNI plugin of podnet, forwards each verb to the podnet agent"

// DefaultTimeout bounds one call to the agent when Plugin.Timeout is zero.
const DefaultTimeout = 2 * time.Minute

// Plugin runs the CNI verbs. The zero value prints to os.Stdout with DefaultTimeout.
// Main checks the invocation and calls the verb with the arguments it collected; a verb
// called directly trusts them. Errors are *Error, made by cniError from the api errors
// the rest of the package returns.
type Plugin struct {
	// Stdout receives results (ADD), the VERSION answer and errors (Main); os.Stdout
	// when nil.
	Stdout io.Writer
	// Timeout bounds one call to the agent; DefaultTimeout when zero.
	Timeout time.Duration
}

func (p *Plugin) stdout() io.Writer {
	if p.Stdout == nil {
		return os.Stdout
	}
	return p.Stdout
}

func (p *Plugin) context() (context.Context, context.CancelFunc) {
	t := p.Timeout
	if t <= 0 {
		t = DefaultTimeout
	}
	return context.WithTimeout(context.Background(), t)
}

// Add attaches the sandbox to the network and prints the result in the config's
// cniVersion. It refuses (code 8) the plugin's own network namespace unless
// args.NetnsOverride allows it.
func (p *Plugin) Add(args *CmdArgs) error {
	if err := p.add(args); err != nil {
		return cniError(err, false)
	}
	return nil
}

func (p *Plugin) add(args *CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if err := requireEnv(args); err != nil {
		return err
	}
	// Refuse a version the result cannot be printed in before anything is attached.
	if !canPrint(conf.CNIVersion) {
		return &api.Error{Code: api.CodeIncompatibleVersion, Msg: fmt.Sprintf("cannot print a result in cniVersion %q", conf.CNIVersion),
			Details: "results are printed in " + strings.Join(SupportedVersions, ", ")}
	}
	req, err := conf.AttachRequest(args)
	if err != nil {
		return err
	}
	ns, err := openNetns(args.Netns)
	if err != nil {
		return err
	}
	defer ns.Close()
	if err := refuseOwnNetns(args, ns); err != nil {
		return err
	}

	ctx, cancel := p.context()
	defer cancel()
	res, err := api.NewClient(conf.Socket).Attach(ctx, req, int(ns.Fd()))
	if err != nil {
		return err
	}
	r, err := convertResult(res, args.Netns, args.IfName)
	if err != nil {
		return err // CodeInternal: the agent's result is malformed
	}
	if err := r.print(p.stdout(), conf.CNIVersion); err != nil {
		return &api.Error{Code: api.CodeIOFailure, Msg: "write result", Details: err.Error()}
	}
	return nil
}

// Del detaches the sandbox; it succeeds when the attachment is already gone, and sends
// no namespace when CNI_NETNS is empty or cannot be opened any more. Like the CNI
// library's skel, it reports an error (code 8) after detaching when CNI_NETNS is the
// plugin's own network namespace and args.NetnsOverride does not allow it.
func (p *Plugin) Del(args *CmdArgs) error {
	if err := p.del(args); err != nil {
		return cniError(err, false)
	}
	return nil
}

func (p *Plugin) del(args *CmdArgs) error {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return err
	}
	if err := requireEnv(args); err != nil {
		return err
	}
	req := api.DetachRequest{EndpointKey: conf.key(args)}
	var ns *os.File
	fd := -1
	if args.Netns != "" {
		if f, err := openNetns(args.Netns); err == nil {
			defer f.Close()
			ns, fd = f, int(f.Fd())
			req.Netns = args.Netns
		}
	}
	ctx, cancel := p.context()
	defer cancel()
	if err := api.NewClient(conf.Socket).Detach(ctx, req, fd); err != nil {
		return err
	}
	if ns != nil {
		return refuseOwnNetns(args, ns)
	}
	return nil
}

// Check asks the agent to verify the attachment against the kernel.
func (p *Plugin) Check(args *CmdArgs) error {
	if err := p.check(args); err != nil {
		return cniError(err, false)
	}
	return nil
}

func (p *Plugin) check(args *CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if err := requireEnv(args); err != nil {
		return err
	}
	ns, err := openNetns(args.Netns)
	if err != nil {
		return err
	}
	defer ns.Close()
	ctx, cancel := p.context()
	defer cancel()
	req := api.CheckRequest{EndpointKey: conf.key(args), Netns: args.Netns}
	return api.NewClient(conf.Socket).Check(ctx, req, int(ns.Fd()))
}

// GC releases every attachment of the network that cni.dev/valid-attachments does not
// list. An empty list releases every attachment of the network, and so does a config
// without the key or with null: CNI 1.1 calls the list "the list of still valid
// attachments to this network", so with none listed none is still valid. Runtimes send
// the empty list when the last container of the network is gone; libcni omits the key
// when called without GCArgs, sends null for a nil list, and a config that went through
// the library's types.NetConf (whose field is omitempty, as in a delegating plugin)
// loses an empty list. Without cni.dev/valid-attachments the older spelling cni.dev/attachments (which
// libcni sends alongside) is read.
//
// An entry without containerID or ifname is refused (code 7) before anything is
// released: it would protect nothing.
func (p *Plugin) GC(args *CmdArgs) error {
	if err := p.gc(args); err != nil {
		return cniError(err, false)
	}
	return nil
}

func (p *Plugin) gc(args *CmdArgs) error {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return err
	}
	if err := conf.validateAttachments(); err != nil {
		return err
	}
	req := api.GCRequest{Network: conf.Network, Valid: []api.EndpointKey{}}
	for _, a := range conf.ValidAttachments {
		req.Valid = append(req.Valid, api.EndpointKey{Network: conf.Network, ContainerID: a.ContainerID, IfName: a.IfName})
	}
	ctx, cancel := p.context()
	defer cancel()
	_, err = api.NewClient(conf.Socket).GC(ctx, req)
	return err
}

// Status reports whether the agent is ready: code 50 (api.CodeNotAvailable) when it is
// unreachable or not ready.
func (p *Plugin) Status(args *CmdArgs) error {
	if err := p.status(args); err != nil {
		return cniError(err, true)
	}
	return nil
}

func (p *Plugin) status(args *CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := p.context()
	defer cancel()
	st, err := api.NewClient(conf.Socket).Status(ctx)
	if err != nil {
		return err
	}
	if !st.Ready {
		return api.Errorf(api.CodeNotAvailable, "podnet agent at %s is not ready", conf.Socket)
	}
	return nil
}

// CheckIfName checks CNI_IFNAME as the agent does (api.CheckIfName). Main runs it before
// anything else, so that the error names the value, where the CNI library's message
// ("interface name is too long") did not. It returns nil for a valid or missing name
// (Main reports a missing one with the other missing variables).
func CheckIfName(name string) *Error {
	if name == "" {
		return nil
	}
	if err := api.CheckIfName(name); err != nil {
		return cniError(api.InvalidEnv("CNI_IFNAME", name, "%v", err), false)
	}
	return nil
}

// requireEnv checks the variables Main already requires, for callers that bypass Main.
func requireEnv(args *CmdArgs) error {
	switch {
	case args.ContainerID == "":
		return api.MissingEnv("CNI_CONTAINERID")
	case args.IfName == "":
		return api.MissingEnv("CNI_IFNAME")
	}
	return nil
}

// Filesystem magic numbers of namespace files: nsfs, and procfs before Linux 3.19.
const (
	nsfsMagic = 0x6e736673
	procMagic = 0x9fa0
)

// openNetns opens the sandbox's network namespace file to pass it to the agent.
func openNetns(path string) (*os.File, error) {
	if path == "" {
		return nil, api.MissingEnv("CNI_NETNS")
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, api.InvalidEnv("CNI_NETNS", path, "cannot open: %v", err)
	}
	var st syscall.Statfs_t
	if err := syscall.Fstatfs(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, api.InvalidEnv("CNI_NETNS", path, "statfs: %v", err)
	}
	if st.Type != nsfsMagic && st.Type != procMagic {
		f.Close()
		return nil, api.InvalidEnv("CNI_NETNS", path, "not a network namespace")
	}
	return f, nil
}

// refuseOwnNetns refuses ns (opened from args.Netns) when it is the plugin's own network
// namespace, unless args.NetnsOverride allows it.
func refuseOwnNetns(args *CmdArgs, ns *os.File) error {
	if args.netnsOverridden() {
		return nil
	}
	var st, own syscall.Stat_t
	if err := syscall.Fstat(int(ns.Fd()), &st); err != nil {
		return nil
	}
	if err := syscall.Stat("/proc/self/ns/net", &own); err != nil {
		return api.Errorf(api.CodeInvalidNetns, "get plugin's netns failed")
	}
	if st.Dev == own.Dev && st.Ino == own.Ino {
		return api.Errorf(api.CodeInvalidNetns, "plugin's netns and netns from CNI_NETNS should not be the same")
	}
	return nil
}

// cniError converts an error into the CNI error the plugin prints, and is the package's
// one place that makes an *Error: the code is api.ErrorCode's (code 7 or 4 for an
// *api.ValidationError, the agent's code for an *api.Error, 100 for anything else),
// msg and details those of the *api.Error, else the error's message. An unreachable
// agent is code 11 (try again later), or 50 (not available) for STATUS. An *Error is
// returned as it is.
func cniError(err error, status bool) *Error {
	var te *Error
	if errors.As(err, &te) {
		return te
	}
	code, msg, details := api.ErrorCode(err), err.Error(), ""
	var ae *api.Error
	if errors.As(err, &ae) {
		msg, details = ae.Msg, ae.Details
	}
	switch {
	case code == api.CodeNotAvailable && !status:
		code = api.CodeTryAgainLater
	case code <= 0:
		code = api.CodeInternal
	}
	return &Error{Code: uint(code), Msg: msg, Details: details}
}
