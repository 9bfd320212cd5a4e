package doctor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// sandbox is a namespace found for a namespace id of the node.
type sandbox struct {
	path string
	key  nsKey
}

// nsKey identifies a namespace: the device and inode of its nsfs file.
type nsKey [2]uint64

// collectPeers fills Link.Peer for the veths whose peer is in another namespace, and
// returns the sandbox namespaces it found.
func collectPeers(h *netlink.Handle, node netns.NsHandle, s *Snapshot) []sandbox {
	want := map[int]bool{}
	for _, l := range s.Links {
		if l.Kind == "veth" && l.NetnsID >= 0 {
			want[l.NetnsID] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	found := findNamespaces(h, node, want)
	var out []sandbox
	missing := 0
	// The peers of one sandbox are read by one goroutine (its handle is not shared);
	// sandboxes in parallel, a few at a time: each read is three netlink round trips.
	bySandbox := map[int][]*Link{}
	var ids []int
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
		if bySandbox[l.NetnsID] == nil {
			ids = append(ids, l.NetnsID)
			out = append(out, sandbox{path: sb.path, key: sb.key})
		}
		bySandbox[l.NetnsID] = append(bySandbox[l.NetnsID], l)
	}
	notes := make([][]string, len(ids))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(len(ids), 8) {
		wg.Go(func() {
			for k := range work {
				sb := found[ids[k]]
				sh, err := sandboxHandle(sb.path)
				if err != nil {
					notes[k] = append(notes[k], fmt.Sprintf("sandbox %s: %v", sb.path, err))
					continue
				}
				for _, l := range bySandbox[ids[k]] {
					p, err := readPeer(sh, sb.path, l.PeerIndex)
					if err != nil {
						notes[k] = append(notes[k], fmt.Sprintf("peer of %s in %s: %v", l.Name, sb.path, err))
						continue
					}
					l.Peer = p
				}
				sh.Close()
			}
		})
	}
	for k := range ids {
		work <- k
	}
	close(work)
	wg.Wait()
	for _, n := range notes {
		s.Notes = append(s.Notes, n...)
	}
	if missing > 0 {
		s.Notes = append(s.Notes, fmt.Sprintf("%s: the sandbox namespace is held by nothing the doctor can find (no /run/netns entry, no process in it or holding it); pod MACs and MTUs there are unknown",
			plural(missing, "veth peer")))
	}
	return out
}

// sandboxHandle opens a netlink socket in the namespace at path.
func sandboxHandle(path string) (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
}

func readPeer(h *netlink.Handle, path string, index int) (*Peer, error) {
	l, err := h.LinkByIndex(index)
	if err != nil {
		return nil, err
	}
	a := l.Attrs()
	p := &Peer{Netns: path, Name: a.Name, MAC: a.HardwareAddr.String(), MTU: a.MTU}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	for _, ad := range addrs {
		if pf, ok := prefixOf(ad.IPNet); ok {
			p.Addrs = append(p.Addrs, pf)
		}
	}
	routes, err := h.RouteList(l, netlink.FAMILY_ALL)
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
	seen := map[nsKey]bool{}
	var st unix.Stat_t
	if unix.Fstat(int(node), &st) == nil {
		seen[nsKey{st.Dev, st.Ino}] = true
	}
	try := func(path string) bool {
		if err := unix.Stat(path, &st); err != nil {
			return false
		}
		key := nsKey{st.Dev, st.Ino}
		if seen[key] {
			return false
		}
		seen[key] = true
		ns, err := netns.GetFromPath(path)
		if err != nil {
			return false
		}
		id, err := h.GetNetNsIdByFd(int(ns))
		ns.Close()
		if err != nil || id < 0 || !want[id] {
			return false
		}
		found[id] = sandbox{path: path, key: key}
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
	pids := processes()
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

// processes lists the process ids in /proc.
func processes() []string {
	procs, _ := os.ReadDir("/proc")
	var pids []string
	for _, p := range procs {
		if p.Name()[0] >= '1' && p.Name()[0] <= '9' {
			pids = append(pids, p.Name())
		}
	}
	return pids
}

// sandboxResolvConf is the resolv.conf the processes of some sandboxes see.
type sandboxResolvConf struct {
	// path is the file as one process of the first sandbox sees it
	// (/proc/PID/root/etc/resolv.conf), netns that sandbox's namespace.
	path, netns string
	// sandboxes are the namespaces whose processes see the same content.
	sandboxes []string
}

// sandboxResolvConfs finds, for each sandbox, a process inside it and the resolv.conf
// in that process's root (what the runtime wrote for the pod), grouped by content so
// that a thousand pods with one cluster resolv.conf are probed once. A sandbox with no
// process (a namespace held by a bind mount only) has no resolv.conf to read.
func sandboxResolvConfs(sandboxes []sandbox) (out []sandboxResolvConf) {
	if len(sandboxes) == 0 {
		return nil
	}
	pidOf := map[nsKey]string{}
	var st unix.Stat_t
	for _, pid := range processes() {
		if unix.Stat("/proc/"+pid+"/ns/net", &st) != nil {
			continue
		}
		if k := (nsKey{st.Dev, st.Ino}); pidOf[k] == "" {
			pidOf[k] = pid
		}
	}
	byContent := map[string]int{}
	for _, sb := range sandboxes {
		pid := pidOf[sb.key]
		if pid == "" {
			continue
		}
		path := "/proc/" + pid + "/root/etc/resolv.conf"
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		if i, ok := byContent[string(b)]; ok {
			out[i].sandboxes = append(out[i].sandboxes, sb.path)
			continue
		}
		byContent[string(b)] = len(out)
		out = append(out, sandboxResolvConf{path: path, netns: "/proc/" + pid + "/ns/net", sandboxes: []string{sb.path}})
	}
	return out
}
