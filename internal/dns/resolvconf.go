package dns

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/podnet/podnet/api"
)

// DNS policies of a pod (Kubernetes' dnsPolicy).
const (
	// PolicyClusterFirst: the cluster DNS server, the namespace's search list, ndots:5.
	PolicyClusterFirst = "ClusterFirst"
	// PolicyClusterFirstWithHostNet is ClusterFirst (podnet has no host-network pods).
	PolicyClusterFirstWithHostNet = "ClusterFirstWithHostNet"
	// PolicyDefault: the node's resolv.conf.
	PolicyDefault = "Default"
	// PolicyNone: only what the pod gives (ResolvConfig's Nameservers, Searches, Options).
	PolicyNone = "None"
)

// Limits of a rendered resolv.conf, as the kubelet's: glibc reads 3 nameservers, and
// the kubelet keeps 32 search domains of 2048 characters in all.
const (
	maxNameservers     = 3
	maxSearchDomains   = 32
	maxSearchListChars = 2048
)

// ResolvFile is the content of a resolv.conf that matters here.
type ResolvFile struct {
	Nameservers []string
	Search      []string
	Options     []string
}

// ParseResolvConf reads a resolv.conf as the resolver does: "#" and ";" start comments,
// the last "search" or "domain" line wins, "options" lines add up.
func ParseResolvConf(text string) ResolvFile {
	var f ResolvFile
	for line := range strings.Lines(text) {
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			f.Nameservers = append(f.Nameservers, fields[1])
		case "search":
			f.Search = slices.Clone(fields[1:])
		case "domain":
			f.Search = []string{fields[1]}
		case "options":
			f.Options = append(f.Options, fields[1:]...)
		}
	}
	return f
}

// ResolvConfig is what ResolvConf renders a pod's resolver configuration from.
type ResolvConfig struct {
	// Domain is the cluster zone (api.DefaultClusterDomain when empty).
	Domain string
	// DNSAddress is the cluster DNS server (api.DNSAddress when invalid).
	DNSAddress netip.Addr
	// Node is the text of the node's resolv.conf: Default copies it, ClusterFirst appends
	// its search domains.
	Node string
	// Nameservers, Searches and Options are the pod's own settings (Kubernetes'
	// dnsConfig): all there is with None, appended to the policy's otherwise (an option
	// of the same name replaces the policy's).
	Nameservers []string
	Searches    []string
	Options     []string
}

// ResolvConf renders the resolv.conf of a pod of namespace ns under policy ("" is
// ClusterFirst), and returns the same configuration for a CNI result. Default with no
// pod settings returns the node's file as is.
func ResolvConf(policy, ns string, cfg ResolvConfig) (string, api.DNS, error) {
	pod := ResolvFile{Nameservers: cfg.Nameservers, Search: cfg.Searches, Options: cfg.Options}
	var base ResolvFile
	switch policy {
	case "", PolicyClusterFirst, PolicyClusterFirstWithHostNet:
		zone := strings.ToLower(strings.Trim(cfg.Domain, "."))
		if zone == "" {
			zone = api.DefaultClusterDomain
		}
		if !isDomain(zone) {
			return "", api.DNS{}, fmt.Errorf("resolv.conf: domain %q: not a domain name", cfg.Domain)
		}
		ns = strings.ToLower(ns)
		if ns == "" {
			ns = api.DefaultNamespace
		}
		if !isLabel(ns) {
			return "", api.DNS{}, fmt.Errorf("resolv.conf: namespace %q: not a DNS label", ns)
		}
		server := cfg.DNSAddress
		if !server.IsValid() {
			server = netip.MustParseAddr(api.DNSAddress)
		}
		base.Nameservers = []string{server.String()}
		base.Search = append([]string{ns + ".svc." + zone, "svc." + zone, zone}, ParseResolvConf(cfg.Node).Search...)
		base.Options = []string{"ndots:5"}
	case PolicyDefault:
		if len(pod.Nameservers)+len(pod.Search)+len(pod.Options) == 0 {
			return cfg.Node, toAPI(ParseResolvConf(cfg.Node)), nil
		}
		base = ParseResolvConf(cfg.Node)
	case PolicyNone:
		if len(pod.Nameservers) == 0 {
			return "", api.DNS{}, fmt.Errorf("resolv.conf: policy %s: no nameservers", PolicyNone)
		}
	default:
		return "", api.DNS{}, fmt.Errorf("resolv.conf: policy %q: not one of %s, %s, %s, %s", policy,
			PolicyClusterFirst, PolicyClusterFirstWithHostNet, PolicyDefault, PolicyNone)
	}
	f, err := merge(base, pod)
	if err != nil {
		return "", api.DNS{}, err
	}
	return render(f), toAPI(f), nil
}

// merge appends the pod's settings to the policy's as the kubelet does: duplicates
// dropped, a pod option replacing the policy's option of the same name, then the
// resolver's limits applied.
func merge(base, pod ResolvFile) (ResolvFile, error) {
	var f ResolvFile
	for _, s := range append(slices.Clone(base.Nameservers), pod.Nameservers...) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return f, fmt.Errorf("resolv.conf: nameserver %q: not an IP address", s)
		}
		if s = a.String(); !slices.Contains(f.Nameservers, s) {
			f.Nameservers = append(f.Nameservers, s)
		}
	}
	f.Nameservers = f.Nameservers[:min(len(f.Nameservers), maxNameservers)]
	chars := 0
	for _, d := range append(slices.Clone(base.Search), pod.Search...) {
		d = strings.TrimSuffix(d, ".")
		if !isDomain(strings.ToLower(d)) {
			return f, fmt.Errorf("resolv.conf: search domain %q: not a domain name", d)
		}
		if slices.Contains(f.Search, d) {
			continue
		}
		if len(f.Search) == maxSearchDomains || chars+len(d)+len(f.Search) > maxSearchListChars {
			break
		}
		f.Search = append(f.Search, d)
		chars += len(d)
	}
	for _, o := range append(slices.Clone(base.Options), pod.Options...) {
		if strings.ContainsAny(o, " \t\n") || o == "" {
			return f, fmt.Errorf("resolv.conf: option %q: invalid", o)
		}
		key, _, _ := strings.Cut(o, ":")
		i := slices.IndexFunc(f.Options, func(p string) bool { k, _, _ := strings.Cut(p, ":"); return k == key })
		if i >= 0 {
			f.Options[i] = o
		} else {
			f.Options = append(f.Options, o)
		}
	}
	return f, nil
}

// render writes f as the kubelet does: nameservers, search, options.
func render(f ResolvFile) string {
	var b strings.Builder
	for _, s := range f.Nameservers {
		b.WriteString("nameserver " + s + "\n")
	}
	if len(f.Search) > 0 {
		b.WriteString("search " + strings.Join(f.Search, " ") + "\n")
	}
	if len(f.Options) > 0 {
		b.WriteString("options " + strings.Join(f.Options, " ") + "\n")
	}
	return b.String()
}

func toAPI(f ResolvFile) api.DNS {
	return api.DNS{Nameservers: f.Nameservers, Search: f.Search, Options: f.Options}
}
