package xtables

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/testutil"
)

// The fixture: what Calico and kube-proxy leave in legacy iptables and ipsets, with
// the corner cases of the blob (a rule without target, a goto, an explicit return, an
// empty user chain, an empty table, a set spanning several netlink messages).
var fixture = []string{
	"ipset create felix-all-ipam-pools hash:net",
	"ipset add felix-all-ipam-pools 10.244.0.0/16",
	"ipset add felix-all-ipam-pools 10.245.0.0/16",
	"ipset create cali40masq-ipam-pools hash:ip",
	"ipset create cali60all-hosts-net hash:net family inet6",
	"ipset add cali60all-hosts-net fd00:10::/64",
	// cali40all-hosts is filled below with bigSetMembers members.
	"ipset create cali40all-hosts hash:ip",

	"iptables-legacy -w -N cali-FORWARD",
	"iptables-legacy -w -N cali-to-wl-dispatch",
	"iptables-legacy -w -A INPUT -p tcp --dport 23 -j REJECT",
	"iptables-legacy -w -A FORWARD -i lo -j ACCEPT",
	"iptables-legacy -w -A FORWARD -p tcp --dport 22 -m comment --comment counted-only",
	"iptables-legacy -w -A FORWARD -m comment --comment cali:wUHhoiAYhphO9Mso -j cali-FORWARD",
	"iptables-legacy -w -A FORWARD -j ACCEPT",
	"iptables-legacy -w -A cali-FORWARD -m set --match-set felix-all-ipam-pools src -j ACCEPT",
	"iptables-legacy -w -A cali-FORWARD -j DROP",
	"iptables-legacy -w -A OUTPUT -o lo -g cali-to-wl-dispatch",
	"iptables-legacy -w -P FORWARD DROP",

	"iptables-legacy -w -t nat -N KUBE-SERVICES",
	"iptables-legacy -w -t nat -N KUBE-SVC-NPX46M4PTMTKRN6Y",
	"iptables-legacy -w -t nat -A PREROUTING -m comment --comment kubernetes-service-portals -j KUBE-SERVICES",
	"iptables-legacy -w -t nat -A OUTPUT -m comment --comment kubernetes-service-portals -j KUBE-SERVICES",
	"iptables-legacy -w -t nat -A KUBE-SERVICES -d 10.96.0.1/32 -p tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y",
	"iptables-legacy -w -t nat -A KUBE-SVC-NPX46M4PTMTKRN6Y -p tcp -j DNAT --to-destination 192.0.2.10:6443",

	"ip6tables-legacy -w -N cali-INPUT",
	"ip6tables-legacy -w -A INPUT -j cali-INPUT",
	"ip6tables-legacy -w -A cali-INPUT -p tcp --dport 23 -j REJECT",
	"ip6tables-legacy -w -A cali-INPUT -p udp -j DROP",
	"ip6tables-legacy -w -A cali-INPUT -j RETURN",
	"ip6tables-legacy -w -P INPUT DROP",
	"ip6tables-legacy -w -t raw -L -n", // creates raw with empty chains
}

// bigSetMembers is more than one netlink message of members (a hash:ip member is 16
// bytes; dumps go in messages of at most 32 KiB).
const bigSetMembers = 3000

const wantTables = `ip filter
  INPUT hook=input policy=accept rules=1 drops=1
  FORWARD hook=forward policy=drop rules=4 drops=0 jump=cali-FORWARD@3
  OUTPUT hook=output policy=accept rules=1 drops=0 jump=cali-to-wl-dispatch@1
  cali-FORWARD rules=2 drops=1
  cali-to-wl-dispatch rules=0 drops=0
ip nat
  PREROUTING hook=prerouting policy=accept rules=1 drops=0 jump=KUBE-SERVICES@1
  INPUT hook=input policy=accept rules=0 drops=0
  OUTPUT hook=output policy=accept rules=1 drops=0 jump=KUBE-SERVICES@1
  POSTROUTING hook=postrouting policy=accept rules=0 drops=0
  KUBE-SERVICES rules=1 drops=0 jump=KUBE-SVC-NPX46M4PTMTKRN6Y@1
  KUBE-SVC-NPX46M4PTMTKRN6Y rules=1 drops=0
ip6 filter
  INPUT hook=input policy=drop rules=1 drops=0 jump=cali-INPUT@1
  FORWARD hook=forward policy=accept rules=0 drops=0
  OUTPUT hook=output policy=accept rules=0 drops=0
  cali-INPUT rules=3 drops=2
ip6 raw
  PREROUTING hook=prerouting policy=accept rules=0 drops=0
  OUTPUT hook=output policy=accept rules=0 drops=0
`

const wantSets = `felix-all-ipam-pools type=hash:net family="ip" entries=2 references=1
cali40masq-ipam-pools type=hash:ip family="ip" entries=0 references=0
cali60all-hosts-net type=hash:net family="ip6" entries=1 references=0
cali40all-hosts type=hash:ip family="ip" entries=3000 references=0
`

// TestPrivilegedTablesAndSets builds the fixture with iptables-legacy, ip6tables-legacy
// and ipset in a throwaway namespace and reads it back. With -update it records the
// kernel's answers in testdata for the unprivileged parser tests.
func TestPrivilegedTablesAndSets(t *testing.T) {
	ns := newNS(t)
	testutil.RequireCommands(t, "iptables-legacy", "ip6tables-legacy", "ipset")
	var tables []Table
	var sets []Set
	var bigSetMsgs int
	err := kernel.Do(ns, func() error {
		for _, cmd := range fixture {
			if err := run(cmd, ""); err != nil {
				return err
			}
		}
		var restore strings.Builder
		for i := range bigSetMembers {
			fmt.Fprintf(&restore, "add cali40all-hosts 10.1.%d.%d\n", i/250, i%250+1)
		}
		if err := run("ipset restore", restore.String()); err != nil {
			return err
		}

		var err error
		if tables, err = Tables(); err != nil {
			return err
		}
		if sets, err = Sets(); err != nil {
			return err
		}
		msgs, err := listSets()
		if err != nil {
			return err
		}
		bigSetMsgs = messagesNaming(msgs, "cali40all-hosts")
		if *update {
			return record(msgs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := dumpTables(tables); got != wantTables {
		t.Errorf("Tables():\n%s\nwant:\n%s", got, wantTables)
	}
	if got := dumpSets(sets); got != wantSets {
		t.Errorf("Sets():\n%s\nwant:\n%s", got, wantSets)
	}
	if bigSetMsgs < 2 {
		t.Errorf("the members of cali40all-hosts came in %d netlink message(s), want several: the continuation path went untested", bigSetMsgs)
	}
}

// messagesNaming counts the ipset messages about the named set.
func messagesNaming(msgs []netlink.Message, set string) int {
	n := 0
	for _, m := range msgs {
		_ = decodeIPSet(m, func(ad *netlink.AttributeDecoder) error {
			if ad.Type() == attrSetName && ad.String() == set {
				n++
			}
			return nil
		})
	}
	return n
}

// record writes the kernel's answers for the fixture to testdata (inside the namespace).
func record(setMsgs []netlink.Message) error {
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		return err
	}
	stale, err := filepath.Glob("testdata/*.xt")
	if err != nil {
		return err
	}
	for _, f := range stale { // tables no longer in the fixture
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	for _, fam := range families {
		names, err := tableNames(fam)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(fam.domain, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, name := range names {
			info, blob, err := readTable(fd, fam, name)
			if err != nil {
				return err
			}
			if err := os.WriteFile(tableFile(fam.name, name), append(info, blob...), 0o644); err != nil {
				return err
			}
		}
	}
	return os.WriteFile(setsFile, encodeMessages(setMsgs), 0o644)
}

// TestPrivilegedEmptyNamespace reads a fresh namespace: the tables the kernel lists
// there (none, on kernels that create tables on first use), each with empty built-in
// chains that accept, no sets, and no table created by the reading.
func TestPrivilegedEmptyNamespace(t *testing.T) {
	ns := newNS(t)
	err := kernel.Do(ns, func() error {
		before, err := listedTables()
		if err != nil {
			return err
		}
		tables, err := Tables()
		if err != nil {
			return err
		}
		var got []string
		for _, tbl := range tables {
			got = append(got, tbl.Family+" "+tbl.Name)
			for _, c := range tbl.Chains {
				if c.Hook == "" || c.Policy != "accept" || c.Rules != 0 || len(c.Jumps) != 0 {
					t.Errorf("%s %s: chain %+v in a fresh namespace", tbl.Family, tbl.Name, c)
				}
			}
		}
		if strings.Join(got, ",") != strings.Join(before, ",") {
			t.Errorf("Tables() = %q, the kernel lists %q", got, before)
		}
		after, err := listedTables()
		if err != nil {
			return err
		}
		if strings.Join(after, ",") != strings.Join(before, ",") {
			t.Errorf("reading changed the tables listed from %q to %q", before, after)
		}
		sets, err := Sets()
		if err != nil {
			return err
		}
		if len(sets) != 0 {
			t.Errorf("Sets() = %+v in a fresh namespace", sets)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPrivilegedThreadNamespace reads from several threads at once, in a namespace
// with one table: on threads other than the main thread, /proc/self/net would show the
// main thread's namespace, not the table.
func TestPrivilegedThreadNamespace(t *testing.T) {
	ns := newNS(t)
	testutil.RequireCommands(t, "iptables-legacy", "ip6tables-legacy", "ipset")
	if err := kernel.Do(ns, func() error { return run("iptables-legacy -w -N cali-FORWARD", "") }); err != nil {
		t.Fatal(err)
	}
	const want = "ip filter\n  INPUT hook=input policy=accept rules=0 drops=0\n" +
		"  FORWARD hook=forward policy=accept rules=0 drops=0\n" +
		"  OUTPUT hook=output policy=accept rules=0 drops=0\n" +
		"  cali-FORWARD rules=0 drops=0\n"
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			var tables []Table
			err := kernel.Do(ns, func() error {
				var err error
				tables, err = Tables()
				return err
			})
			if err != nil {
				t.Error(err)
			} else if got := dumpTables(tables); got != want {
				t.Errorf("Tables():\n%s\nwant:\n%s", got, want)
			}
		})
	}
	wg.Wait()
}

// listedTables is "family name" of each table of the calling thread's namespace.
func listedTables() ([]string, error) {
	var out []string
	for _, fam := range families {
		names, err := tableNames(fam)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			out = append(out, fam.name+" "+n)
		}
	}
	return out, nil
}

// newNS is a throwaway network namespace for one test.
func newNS(t *testing.T) netns.NsHandle {
	t.Helper()
	testutil.RequireRoot(t)
	ns, err := kernel.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// run runs one fixture command (words split on spaces) with stdin, in the namespace
// of the calling thread.
func run(cmdline, stdin string) error {
	args := strings.Fields(cmdline)
	cmd := exec.Command(testutil.Command(args[0]), args[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", cmdline, err, strings.TrimSpace(out.String()))
	}
	return nil
}
