package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// WriteText prints r for a person: each finding with what is wrong, the evidence and
// the fix, worst first, then a one-line summary.
func WriteText(w io.Writer, r Report) error {
	var b strings.Builder
	ns := r.Namespace
	if ns == "" {
		ns = "this namespace"
	}
	for i, f := range r.Findings {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "%s [%s] %s\n", strings.ToUpper(string(f.Severity)), f.Class, f.Culprit)
		fmt.Fprintf(&b, "  %s\n", f.RootCause)
		if len(f.Evidence) > 0 {
			b.WriteString("  Evidence:\n")
			for _, e := range f.Evidence {
				fmt.Fprintf(&b, "    - %s\n", e)
			}
		}
		if f.Fix != "" {
			b.WriteString("  Fix:\n")
			for _, line := range strings.Split(f.Fix, "\n") {
				fmt.Fprintf(&b, "    %s\n", line)
			}
		}
	}
	if len(r.Notes) > 0 {
		if len(r.Findings) > 0 {
			b.WriteString("\n")
		}
		b.WriteString("Not checked:\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
	}
	counts := map[Severity]int{}
	for _, f := range r.Findings {
		counts[f.Severity]++
	}
	if len(r.Findings) > 0 || len(r.Notes) > 0 {
		b.WriteString("\n")
	}
	if counts[SeverityError]+counts[SeverityWarning] == 0 {
		fmt.Fprintf(&b, "%s: no problem found", ns)
		if counts[SeverityInfo] > 0 {
			fmt.Fprintf(&b, " (%d info)", counts[SeverityInfo])
		}
		b.WriteString(".\n")
	} else {
		fmt.Fprintf(&b, "%s: %s, %s, %d info.\n", ns, plural(counts[SeverityError], "error"), plural(counts[SeverityWarning], "warning"), counts[SeverityInfo])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON prints r as indented JSON: {"findings":[...]} (an empty list when there are
// none), with the namespace and notes when there are.
func WriteJSON(w io.Writer, r Report) error {
	if r.Findings == nil {
		r.Findings = []Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
