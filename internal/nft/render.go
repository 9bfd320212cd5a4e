package nft

import (
	"fmt"
	"strings"

	"github.com/podnet/podnet/internal/nftwire"
)

// Render returns podnet's tables for r in nft syntax, close to what `nft list ruleset`
// prints for them: table inet podnet, then table bridge podnet; elements sorted, one per
// line, network sets with the network(s) of each element as comment; every rule printed
// from the expressions Sync writes, as nft 1.0.6 lists them (internal/nftwire's printer).
// It is pure and deterministic (the order of the slices of r does not matter). It does not
// validate r: what Validate rejects is left out.
func Render(r Ruleset) string {
	return build(r).render()
}

func (d rulesetDef) render() string {
	var b strings.Builder
	for i, t := range d.tables {
		if i > 0 {
			b.WriteString("\n")
		}
		t.render(&b)
	}
	return b.String()
}

func (t tableDef) render(b *strings.Builder) {
	fmt.Fprintf(b, "table %s %s {\n", familyName(t.family), TableName)
	for i, s := range t.sets {
		if i > 0 {
			b.WriteString("\n")
		}
		kind, typ := "set", s.keyType.Name
		if s.isMap() {
			kind, typ = "map", typ+" : "+s.dataType.Name
		}
		decl := "type " + typ
		if s.typeofKey != nil {
			decl = "typeof " + s.typeofKey.text
			if s.typeofData != nil {
				decl += " : " + s.typeofData.text
			}
		}
		fmt.Fprintf(b, "\t%s %s {\n", kind, s.name)
		fmt.Fprintf(b, "\t\t%s\n", decl)
		if s.size != 0 {
			fmt.Fprintf(b, "\t\tsize %d\n", s.size)
		}
		switch {
		case s.interval:
			b.WriteString("\t\tflags interval\n")
		case s.dynamic:
			b.WriteString("\t\tflags dynamic,timeout\n")
			fmt.Fprintf(b, "\t\ttimeout %s\n", nftwire.Duration(s.timeout))
		}
		if s.comment != "" {
			fmt.Fprintf(b, "\t\tcomment %s\n", quote(s.comment))
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
	printed := t.wire()
	for _, c := range t.chains {
		fmt.Fprintf(b, "\n\tchain %s {\n", c.name)
		if c.base() {
			fmt.Fprintf(b, "\t\ttype %s hook %s priority %s; policy accept;\n", c.typ, c.hookName, c.prioName)
		}
		for _, r := range c.rules {
			fmt.Fprintf(b, "\t\t%s\n", printed.PrintExprs(r.exprs))
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
}
