package doctor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// sandbox is a namespace found for a namespace id of the node.
type sandbox struct {
	path string
	h    *netlink.Handle
}

// collectPeers fills Link.Peer for the veths whose peer is in another namespace.
func collectPeers(h *netlink.Handle, node netns.NsHandle, s *Snapshot) {
	want := map[int]bool{}
	for _, l := range s.Links {
		if l.Kind == "veth" && l.NetnsID >= 0 {
			want[l.NetnsID] = true
		}
	}
	if len(want) == 0 {
		return
	}
	found := findNamespaces(h, node, want)
	defer func() {
		for _, sb := range found {
			sb.h.Close()
		}
	}()
	missing := 0
	for i := range s.Links {
		l := &s.Links[i]
		if l.Kind != "veth" || l.NetnsID < 0 {
			continue
		}
		sb, ok := found[l.NetnsID]
		if !ok {
			missing++
			continue
		}
		p, err := readPeer(sb, l.PeerIndex)
		if err != nil {
			s.Notes = append(s.Notes, fmt.Sprintf("peer of %s in %s: %v", l.Name, sb.path, err))
			continue
		}
		l.Peer = p
	}
	if missing > 0 {
		s.Notes = append(s.Notes, fmt.Sprintf("%s: the sandbox namespace is held by nothing the doctor can find (no /run/netns entry, no process in it or holding it); pod MACs and MTUs there are unknown",
			plural(missing, "veth peer")))
	}
}

func readPeer(sb sandbox, index int) (*Peer, error) {
	l, err := sb.h.LinkByIndex(index)
	if err != nil {
		return nil, err
	}
	a := l.Attrs()
	p := &Peer{Netns: sb.path, Name: a.Name, MAC: a.HardwareAddr.String(), MTU: a.MTU}
	addrs, err := sb.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	for _, ad := range addrs {
		if pf, ok := prefixOf(ad.IPNet); ok {
			p.Addrs = append(p.Addrs, pf)
		}
	}
	routes, err := sb.h.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		if gw := addrOf16(r.Gw); gw.IsValid() {
			p.Gateways = append(p.Gateways, gw)
		}
	}
	return p, nil
}

// findNamespaces looks for the namespaces whose id (as the node sees them) is wanted:
// the named ones first, then those of processes, then those processes hold open.
func findNamespaces(h *netlink.Handle, node netns.NsHandle, want map[int]bool) map[int]sandbox {
	found := map[int]sandbox{}
	seen := map[[2]uint64]bool{}
	var st unix.Stat_t
	if unix.Fstat(int(node), &st) == nil {
		seen[[2]uint64{st.Dev, st.Ino}] = true
	}
	try := func(path string) bool {
		if err := unix.Stat(path, &st); err != nil {
			return false
		}
		key := [2]uint64{st.Dev, st.Ino}
		if seen[key] {
			return false
		}
		seen[key] = true
		ns, err := netns.GetFromPath(path)
		if err != nil {
			return false
		}
		id, err := h.GetNetNsIdByFd(int(ns))
		if err != nil || id < 0 || !want[id] {
			ns.Close()
			return false
		}
		sh, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		ns.Close()
		if err != nil {
			return false
		}
		found[id] = sandbox{path: path, h: sh}
		return len(found) == len(want)
	}
	for _, dir := range []string{"/run/netns", "/var/run/netns"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if try(filepath.Join(dir, e.Name())) {
				return found
			}
		}
	}
	procs, _ := os.ReadDir("/proc")
	var pids []string
	for _, p := range procs {
		if p.Name()[0] >= '1' && p.Name()[0] <= '9' {
			pids = append(pids, p.Name())
		}
	}
	for _, pid := range pids {
		if try("/proc/" + pid + "/ns/net") {
			return found
		}
	}
	for _, pid := range pids {
		fds, _ := os.ReadDir("/proc/" + pid + "/fd")
		for _, fd := range fds {
			path := "/proc/" + pid + "/fd/" + fd.Name()
			if target, err := os.Readlink(path); err == nil && strings.HasPrefix(target, "net:[") && try(path) {
				return found
			}
		}
	}
	return found
}
