package nft

import (
	"fmt"
	"strings"
)

// Render returns the whole table inet podnet for r in nft syntax, close to what
// `nft list table inet podnet` prints: elements sorted, one per line, each with the
// network it belongs to as comment. It is pure and deterministic (the order of networks
// and subnets in r does not matter). It does not validate r: what Validate rejects is
// left out.
func Render(r Ruleset) string {
	return build(r).render()
}

func (t tableDef) render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for i, s := range t.sets {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tset %s {\n", s.name)
		fmt.Fprintf(&b, "\t\ttype %s\n", s.keyType.Name)
		if s.interval {
			b.WriteString("\t\tflags interval\n")
		}
		for j, e := range s.elems {
			if j == 0 {
				b.WriteString("\t\telements = { ")
			} else {
				b.WriteString(",\n\t\t\t     ")
			}
			b.WriteString(e.text)
			if e.comment != "" {
				b.WriteString(" comment " + quote(e.comment))
			}
			if j == len(s.elems)-1 {
				b.WriteString(" }\n")
			}
		}
		b.WriteString("\t}\n")
	}
	for _, c := range t.chains {
		fmt.Fprintf(&b, "\n\tchain %s {\n", c.name)
		fmt.Fprintf(&b, "\t\ttype %s hook %s priority %s; policy accept;\n", c.typ, c.hookName, c.prioName)
		for _, r := range c.rules {
			fmt.Fprintf(&b, "\t\t%s\n", r.text)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}
