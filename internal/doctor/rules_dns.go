package doctor

import (
	"fmt"
	"regexp"
	"strings"
)

// A search domain that answers a random label [dns-search-wildcard]: a wildcard record
// under it answers every search expansion, so names the resolver tries under it first
// resolve to the wildcard's address instead of their own.

func dnsRule(v *view) []Finding {
	var out []Finding
	for _, rc := range v.s.ResolvConfs {
		done := map[string]bool{}
		for _, p := range rc.Probes {
			if len(p.Answers) == 0 || done[p.Domain] {
				continue
			}
			done[p.Domain] = true
			ndots := rc.Ndots
			if ndots == 0 {
				ndots = 1
			}
			f := Finding{
				Class:    ClassDNSSearchWildcard,
				Severity: SeverityWarning,
				Culprit:  fmt.Sprintf("search domain %s in %s", p.Domain, rc.Path),
				Evidence: []string{
					fmt.Sprintf("%s %s answered %s (nameserver %s)", p.Name, p.Type, strings.Join(p.Answers, ", "), p.Server),
					fmt.Sprintf("%s: search %s, options ndots:%d", rc.Path, strings.Join(rc.Search, " "), ndots),
				},
				Fix: fmt.Sprintf("sed -i -E '/^search/s/[[:space:]]%s([[:space:]]|$)/\\1/' %s\n# or delete the wildcard record *.%s (for pods: correct the cluster domain that put it in their search list)",
					regexp.QuoteMeta(p.Domain), rc.Path, p.Domain),
			}
			if len(rc.Sandboxes) > 0 {
				f.Evidence = append(f.Evidence, fmt.Sprintf("the resolv.conf of %s: %s", plural(len(rc.Sandboxes), "pod sandbox"), listNames(rc.Sandboxes)))
			}
			if ndots > 1 {
				f.Severity = SeverityError
				f.RootCause = fmt.Sprintf("The search domain %s answers a name that cannot exist (%s): it has a wildcard record. With ndots:%d every name with fewer than %d dots is tried under %s first and resolves to the wildcard's address: login.example.com becomes login.example.com.%s, and the real host is never asked for.",
					p.Domain, p.Name, ndots, ndots, p.Domain, p.Domain)
			} else {
				f.RootCause = fmt.Sprintf("The search domain %s answers a name that cannot exist (%s): it has a wildcard record. Every single-label name, and every name that does not exist, resolves to the wildcard's address instead of failing.",
					p.Domain, p.Name)
			}
			out = append(out, f)
		}
	}
	return out
}

// listNames lists up to four names, then "...".
func listNames(names []string) string {
	if len(names) > 4 {
		return strings.Join(names[:4], ", ") + ", ..."
	}
	return strings.Join(names, ", ")
}
