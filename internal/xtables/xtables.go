// Package xtables reads, without running iptables or ipset, the legacy iptables tables
// (ip and ip6) and the ipsets of the network namespace of the calling thread, for the
// doctor's report of what other CNI plugins left behind (Calico's cali-* chains and
// felix-* sets, kube-proxy's KUBE-* chains).
//
// Tables asks the kernel with getsockopt(IPT_SO_GET_INFO / IPT_SO_GET_ENTRIES) on a
// raw socket, as iptables-legacy does, and parses the rule blob itself; Sets dumps the
// ipsets over nfnetlink (IPSET_CMD_LIST). Neither creates, changes or deletes a kernel
// object: Tables only asks for the tables the kernel lists as existing in the
// namespace (asking for another name would create it), and both need CAP_NET_ADMIN.
//
// Both read the namespace of the OS thread they run on. To read another namespace,
// call them inside kernel.Do. (For the same reason Tables reads
// /proc/thread-self/net, not /proc/self/net, which is the main thread's namespace.)
package xtables

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Table is one legacy iptables table of one family.
type Table struct {
	Family string  // "ip" or "ip6"
	Name   string  // filter, nat, mangle, raw, security
	Chains []Chain // built-in chains first in hook order, then user chains in kernel order
}

// Chain is one chain of a Table, reduced to what the doctor reports.
type Chain struct {
	Name   string
	Hook   string // "prerouting", "input", "forward", "output", "postrouting" for a built-in chain; "" for a user chain
	Policy string // "accept" or "drop" for a built-in chain; "" for a user chain
	Rules  int    // rules, not counting a built-in chain's policy nor a user chain's closing return
	Drops  int    // rules whose target is DROP or REJECT
	Jumps  []Jump // rules that jump or go to a user chain, in rule order
}

// Jump is one rule that jumps (-j) or goes (-g) to a user chain.
type Jump struct {
	Target string // the user chain
	Rule   int    // 1-based position of the rule in its chain
}

// family is what differs between the ip and ip6 tables.
type family struct {
	name      string // Table.Family
	namesFile string // under /proc/thread-self/net
	domain    int    // socket domain
	level     int    // getsockopt level
	layout    entryLayout
}

var families = []family{
	{name: "ip", namesFile: "ip_tables_names", domain: unix.AF_INET, level: unix.IPPROTO_IP, layout: ipLayout},
	{name: "ip6", namesFile: "ip6_tables_names", domain: unix.AF_INET6, level: unix.IPPROTO_IPV6, layout: ip6Layout},
}

// getsockopt numbers, the same for IPT_ on SOL_IP and IP6T_ on SOL_IPV6
// (linux/netfilter_ipv4/ip_tables.h, linux/netfilter_ipv6/ip6_tables.h).
const (
	soGetInfo    = 64 // IPT_SO_GET_INFO
	soGetEntries = 65 // IPT_SO_GET_ENTRIES
)

// Tables reads every legacy table of both families that the kernel lists in
// /proc/net/ip_tables_names and /proc/net/ip6_tables_names of the calling thread's
// namespace, ip tables first, each family's in name order. A table holding only empty
// built-in chains with policy ACCEPT is returned too: the caller decides what counts.
// Without legacy tables (none created in the namespace, or no ip_tables in the kernel)
// it returns none and no error.
func Tables() ([]Table, error) {
	var tables []Table
	for _, fam := range families {
		names, err := tableNames(fam)
		if err != nil {
			return nil, err
		}
		if len(names) == 0 {
			continue
		}
		fd, err := unix.Socket(fam.domain, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return nil, fmt.Errorf("open %s raw socket: %w", fam.name, err)
		}
		for _, name := range names {
			info, blob, err := readTable(fd, fam, name)
			if err == nil {
				var t Table
				if t, err = parseTable(fam, name, info, blob); err == nil {
					tables = append(tables, t)
					continue
				}
			}
			unix.Close(fd)
			return nil, err
		}
		unix.Close(fd)
	}
	return tables, nil
}

// tableNames reads the names of the family's existing tables, sorted.
func tableNames(fam family) ([]string, error) {
	b, err := os.ReadFile("/proc/thread-self/net/" + fam.namesFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // no ip_tables (ip6_tables) in the kernel: no legacy tables
	}
	if err != nil {
		return nil, fmt.Errorf("read %s table names: %w", fam.name, err)
	}
	names := strings.Fields(string(b))
	slices.Sort(names)
	return slices.Compact(names), nil
}

// getinfo is the size of struct ipt_getinfo (and ip6t_getinfo): name[32],
// valid_hooks, hook_entry[5], underflow[5], num_entries, size, all u32.
const getinfoSize = 84

// getEntriesHeader is the size of struct ipt_get_entries before its entry table: name[32]
// and size (u32), then 4 bytes of padding, since the entries hold u64 counters.
const getEntriesHeader = 40

// maxTableName is XT_TABLE_MAXNAMELEN with its NUL.
const maxTableName = 32

// readTable asks the kernel for the table's struct ipt_getinfo and its entries. When
// the table changes in between (the kernel answers EAGAIN to a stale size), it asks
// again, a few times.
func readTable(fd int, fam family, name string) (info, blob []byte, err error) {
	if len(name) >= maxTableName {
		return nil, nil, fmt.Errorf("%s table name %q: longer than %d bytes", fam.name, name, maxTableName-1)
	}
	const attempts = 5
	for range attempts {
		info = make([]byte, getinfoSize)
		copy(info, name)
		if err := getsockopt(fd, fam.level, soGetInfo, info); err != nil {
			return nil, nil, fmt.Errorf("getsockopt IPT_SO_GET_INFO %s %s: %w", fam.name, name, err)
		}
		size := binary.NativeEndian.Uint32(info[80:84])
		buf := make([]byte, getEntriesHeader+int(size))
		copy(buf, name)
		binary.NativeEndian.PutUint32(buf[32:36], size)
		err := getsockopt(fd, fam.level, soGetEntries, buf)
		if errors.Is(err, unix.EAGAIN) {
			continue // the table was replaced between the two calls
		}
		if err != nil {
			return nil, nil, fmt.Errorf("getsockopt IPT_SO_GET_ENTRIES %s %s: %w", fam.name, name, err)
		}
		return info, buf[getEntriesHeader:], nil
	}
	return nil, nil, fmt.Errorf("getsockopt IPT_SO_GET_ENTRIES %s %s: table changed during %d reads", fam.name, name, attempts)
}

// getsockopt calls getsockopt(2) with buf as an in-out argument of exactly len(buf)
// bytes, which both IPT_SO_GET_ calls require.
func getsockopt(fd, level, opt int, buf []byte) error {
	n := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return errno
	}
	if int(n) != len(buf) {
		return fmt.Errorf("kernel returned %d bytes, want %d", n, len(buf))
	}
	return nil
}
