package dns

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	mdns "github.com/miekg/dns"
)

// WildcardError says that a search domain answers for a name nobody created: every
// search expansion through it would be hijacked (DOMAIN.md section 6, the c1.example.org
// incident: login.other.com resolved as login.other.com.c1.example.org).
type WildcardError struct {
	Domain string // the search domain
	Probe  string // the random name asked
	Type   string // the record type asked
	// Records are the answers, as zone lines; empty when the name existed without
	// records (NODATA: a musl stub stops its search there and finds nothing).
	Records []string
}

func (e *WildcardError) Error() string {
	what := "exists (NODATA)"
	if len(e.Records) > 0 {
		what = "resolves: " + strings.Join(e.Records, "; ")
	}
	return fmt.Sprintf("search domain %q: random name %s %s %s: a wildcard would hijack every search expansion",
		e.Domain, e.Probe, e.Type, what)
}

// IsWildcard reports whether err is or wraps a *WildcardError.
func IsWildcard(err error) bool {
	var w *WildcardError
	return errors.As(err, &w)
}

// CheckSearchDomains refuses search domains that answer for a random label: for each
// domain it asks A and AAAA of <random>.<domain> through r, and anything but NXDOMAIN
// (records, or NOERROR without records) is a *WildcardError. A domain that cannot be
// checked (no answer, SERVFAIL) gives a plain error. All failures are joined; nil means
// every domain is safe. Used at agent startup and by "podnet dns check".
func CheckSearchDomains(ctx context.Context, r Exchanger, domains []string) error {
	var errs []error
	for _, d := range domains {
		d = strings.Trim(strings.TrimSpace(d), ".")
		if d == "" {
			continue
		}
		if _, ok := mdns.IsDomainName(d); !ok {
			errs = append(errs, fmt.Errorf("search domain %q: not a domain name", d))
			continue
		}
		probe := randomLabel() + "." + mdns.Fqdn(d)
		var found *WildcardError
		for _, t := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
			w, err := checkOne(ctx, r, d, probe, t)
			if err != nil {
				errs = append(errs, err)
				found = nil
				break
			}
			if w != nil && (found == nil || len(found.Records) == 0) {
				found = w // the answer with records says most
			}
		}
		if found != nil {
			errs = append(errs, found)
		}
	}
	return errors.Join(errs...)
}

// checkOne asks t of probe: a *WildcardError when it exists, an error when there is
// no telling.
func checkOne(ctx context.Context, r Exchanger, domain, probe string, t uint16) (*WildcardError, error) {
	q := new(mdns.Msg)
	q.SetQuestion(probe, t)
	resp, err := r.Exchange(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("search domain %q: check %s %s: %w", domain, probe, mdns.TypeToString[t], err)
	}
	switch resp.Rcode {
	case mdns.RcodeNameError:
		return nil, nil
	case mdns.RcodeSuccess:
		w := &WildcardError{Domain: domain, Probe: probe, Type: mdns.TypeToString[t]}
		for _, rr := range resp.Answer {
			w.Records = append(w.Records, strings.ReplaceAll(rr.String(), "\t", " "))
		}
		return w, nil
	}
	return nil, fmt.Errorf("search domain %q: check %s %s: %s", domain, probe, mdns.TypeToString[t], mdns.RcodeToString[resp.Rcode])
}

// randomLabel returns a label nobody would create: "podnet-check-" and 16 random letters
// and digits.
func randomLabel() string {
	return "podnet-check-" + strings.ToLower(rand.Text()[:16])
}
