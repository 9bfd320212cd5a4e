package etcdstore

import (
	"slices"
	"strings"
	"testing"
)

func TestEscape(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"red", "red"},
		{"", ""},
		{"a/b", "a%2Fb"},
		{"100%", "100%25"},
		{"a b\x00\n\x7f", "a%20b%00%0A%7F"},
		{"caf\xc3\xa9\xff", "caf%C3%A9%FF"},
		{"10.88.0.0/16", "10.88.0.0%2F16"},
		{"fe80::1%eth0", "fe80::1%25eth0"},
		{"k8s:ns_name-1.x~y@z", "k8s:ns_name-1.x~y@z"},
	} {
		got := escape(c.in)
		if got != c.want {
			t.Errorf("escape(%q) = %q; want %q", c.in, got, c.want)
		}
		if strings.Contains(got, "/") {
			t.Errorf("escape(%q) = %q holds a '/'", c.in, got)
		}
		back, err := unescape(got)
		if err != nil || back != c.in {
			t.Errorf("unescape(%q) = %q, %v; want %q", got, back, err, c.in)
		}
	}
	for _, bad := range []string{"%", "%2", "%zz", "a%2"} {
		if _, err := unescape(bad); err == nil {
			t.Errorf("unescape(%q): no error", bad)
		}
	}
}

func TestAtLeast34(t *testing.T) {
	for v, want := range map[string]bool{
		"3.4.23": true, "3.5.0": true, "3.7.3": true, "4.0.0": true,
		"3.3.25": false, "3.2.26": false, "2.3.8": false, "": false, "x.y": false,
	} {
		if got := atLeast34(v); got != want {
			t.Errorf("atLeast34(%q) = %v; want %v", v, got, want)
		}
	}
}

// TestOpsSplitClearedRanges checks the ranges of a deleted prefix around keys put
// under it again: etcd refuses a Txn that puts a key inside a range it deletes.
func TestOpsSplitClearedRanges(t *testing.T) {
	s := &Store{layout: layout{prefix: "/p/"}}
	tx := s.newTx(true)
	tx.put("/p/endpoints/red/c1/eth0", nil)
	tx.clear("/p/endpoints/red/")
	tx.clear("/p/endpoints/red/") // twice: one set of ranges
	tx.put("/p/endpoints/red/c2/eth0", []byte("x"))
	tx.put("/p/endpoints/red/c4/eth0", []byte("y"))
	tx.del("/p/endpoints/red/c3/eth0") // a delete inside the range is allowed
	var got []string
	for _, op := range tx.ops() {
		switch {
		case op.IsDelete() && len(op.RangeBytes()) > 0:
			got = append(got, "delete ["+string(op.KeyBytes())+", "+string(op.RangeBytes())+")")
		case op.IsDelete():
			got = append(got, "delete "+string(op.KeyBytes()))
		case op.IsPut():
			got = append(got, "put "+string(op.KeyBytes()))
		}
	}
	want := []string{
		"delete [/p/endpoints/red/, /p/endpoints/red/c2/eth0)",
		"delete [/p/endpoints/red/c2/eth0\x00, /p/endpoints/red/c4/eth0)",
		"delete [/p/endpoints/red/c4/eth0\x00, /p/endpoints/red0)",
		"put /p/endpoints/red/c2/eth0",
		"delete /p/endpoints/red/c3/eth0",
		"put /p/endpoints/red/c4/eth0",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ops:\n got %q\nwant %q", got, want)
	}
}
