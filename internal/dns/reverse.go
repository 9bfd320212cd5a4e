package dns

import (
	"net/netip"
	"strings"
)

const (
	reverse4 = "in-addr.arpa."
	reverse6 = "ip6.arpa."
)

// parseReverse returns the address whose full reverse name is name (lower case, fully
// qualified): d.c.b.a.in-addr.arpa. or the 32 nibbles of ip6.arpa. Partial names (a
// network's reverse zone) and non-canonical spellings (leading zeros) are no address.
func parseReverse(name string) (netip.Addr, bool) {
	switch {
	case strings.HasSuffix(name, "."+reverse4):
		rel := name[:len(name)-len(reverse4)-1]
		var b [4]byte
		for i := 3; i >= 0; i-- {
			label := rel
			if i > 0 {
				j := strings.IndexByte(rel, '.')
				if j < 0 {
					return netip.Addr{}, false
				}
				label, rel = rel[:j], rel[j+1:]
			}
			v, ok := decimalByte(label)
			if !ok {
				return netip.Addr{}, false
			}
			b[i] = v
		}
		return netip.AddrFrom4(b), true
	case strings.HasSuffix(name, "."+reverse6):
		rel := name[:len(name)-len(reverse6)-1]
		if len(rel) != 63 { // 32 nibbles and 31 dots
			return netip.Addr{}, false
		}
		var b [16]byte
		for i := 0; i < 32; i++ {
			if i > 0 && rel[2*i-1] != '.' {
				return netip.Addr{}, false
			}
			v, ok := nibble(rel[2*i])
			if !ok {
				return netip.Addr{}, false
			}
			// The first label is the lowest nibble of the last byte.
			pos := 31 - i
			if pos%2 == 0 {
				b[pos/2] |= v << 4
			} else {
				b[pos/2] |= v
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// isReverseName reports whether name is inside in-addr.arpa. or ip6.arpa.
func isReverseName(name string) bool {
	return name == reverse4 || name == reverse6 ||
		strings.HasSuffix(name, "."+reverse4) || strings.HasSuffix(name, "."+reverse6)
}

func decimalByte(s string) (byte, bool) {
	if s == "" || len(s) > 3 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	v := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		v = v*10 + int(s[i]-'0')
	}
	if v > 255 {
		return 0, false
	}
	return byte(v), true
}

func nibble(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
