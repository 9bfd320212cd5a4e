package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/podnet/podnet/api"
)

// column is one column of a listing's table: its header and how a row fills its cell.
type column[T any] struct {
	header string
	cell   func(T) string
}

// printList prints the rows of a listing: as an indented JSON array (an empty one when
// there are no rows) when asJSON, else as a table with a header line and one line per row.
func printList[T any](w io.Writer, asJSON bool, rows []T, cols []column[T]) error {
	if asJSON {
		if rows == nil {
			rows = []T{}
		}
		return printJSON(w, rows)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	cells := make([]string, len(cols))
	for i, c := range cols {
		cells[i] = c.header
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
	for _, r := range rows {
		for i, c := range cols {
			cells[i] = c.cell(r)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

var networkColumns = []column[api.Network]{
	{"NAME", func(n api.Network) string { return n.Name }},
	{"DRIVER", func(n api.Network) string { return n.Driver }},
	{"SUBNETS", func(n api.Network) string {
		return joinMap(n.Subnets, func(s api.Subnet) string { return s.Prefix.String() })
	}},
	{"GATEWAYS", func(n api.Network) string {
		return joinMap(n.Subnets, func(s api.Subnet) string { return s.Gateway.String() })
	}},
	{"BRIDGE", func(n api.Network) string { return n.Bridge }},
	{"CROSS-NODE", func(n api.Network) string { return n.CrossNode }},
	{"MTU", func(n api.Network) string { return strconv.Itoa(n.MTU) }},
	{"MASQUERADE", func(n api.Network) string { return strconv.FormatBool(n.Masquerade) }},
}

var endpointColumns = []column[api.Endpoint]{
	{"NETWORK", func(ep api.Endpoint) string { return ep.Network }},
	{"CONTAINER", func(ep api.Endpoint) string { return shortID(ep.ContainerID) }},
	{"NAME", func(ep api.Endpoint) string { return ep.Name }},
	{"INTERFACE", func(ep api.Endpoint) string { return ep.IfName }},
	{"IPS", func(ep api.Endpoint) string { return joinMap(ep.IPs, netip.Prefix.String) }},
	{"MAC", func(ep api.Endpoint) string { return ep.MAC }},
	{"HOST IF", func(ep api.Endpoint) string { return ep.HostIf }},
	{"NETNS", func(ep api.Endpoint) string { return ep.Netns }},
	{"STATE", func(ep api.Endpoint) string { return ep.State }},
}

// nodeColumns are `podnet node ls`'s. A node that only podnet controller recorded (its
// agent never registered) has no address and no lease.
var nodeColumns = []column[api.NodeInfo]{
	{"NAME", func(n api.NodeInfo) string { return n.Name }},
	{"NODE IP", func(n api.NodeInfo) string {
		if !n.IP.IsValid() {
			return ""
		}
		return n.IP.String()
	}},
	{"LEASE", func(n api.NodeInfo) string {
		switch {
		case n.Alive:
			return "alive"
		case !n.IP.IsValid() && n.Registered.IsZero():
			return "none"
		}
		return "expired"
	}},
	{"PODCIDRS", func(n api.NodeInfo) string { return joinMap(n.PodCIDRs, netip.Prefix.String) }},
	{"BLOCKS", func(n api.NodeInfo) string {
		var parts []string
		for _, net := range slices.Sorted(maps.Keys(n.Blocks)) {
			parts = append(parts, net+": "+joinMap(n.Blocks[net], netip.Prefix.String))
		}
		return strings.Join(parts, "; ")
	}},
	{"VERSION", func(n api.NodeInfo) string { return n.Version }},
}

// portRow is one line of `podnet port ls`: a published port and the endpoint it leads to.
type portRow struct {
	api.PortMapping
	Network     string `json:"network"`
	ContainerID string `json:"containerID"`
	Name        string `json:"name,omitempty"`
	Address     string `json:"address"`
}

// portRows lists the published ports of endpoints, in order.
func portRows(eps []api.Endpoint) []portRow {
	var rows []portRow
	for _, ep := range eps {
		addrs := joinMap(ep.IPs, func(p netip.Prefix) string { return p.Addr().String() })
		for _, m := range ep.Ports {
			rows = append(rows, portRow{m, ep.Network, ep.ContainerID, ep.Name, addrs})
		}
	}
	return rows
}

var portColumns = []column[portRow]{
	{"HOST", func(r portRow) string {
		host := "*"
		if r.HostIP.IsValid() {
			host = r.HostIP.String()
		}
		return host + ":" + strconv.Itoa(int(r.HostPort))
	}},
	{"PROTO", func(r portRow) string { return r.Protocol }},
	{"CONTAINER PORT", func(r portRow) string { return strconv.Itoa(int(r.ContainerPort)) }},
	{"NETWORK", func(r portRow) string { return r.Network }},
	{"CONTAINER", func(r portRow) string { return shortID(r.ContainerID) }},
	{"NAME", func(r portRow) string { return r.Name }},
	{"ADDRESS", func(r portRow) string { return r.Address }},
}

var serviceColumns = []column[api.Service]{
	{"NAMESPACE", func(s api.Service) string { return s.Namespace }},
	{"NAME", func(s api.Service) string { return s.Name }},
	{"VIPS", func(s api.Service) string {
		switch {
		case s.Headless:
			return "None (headless)"
		case s.ExternalName != "":
			return "CNAME " + s.ExternalName
		}
		return joinMap(s.VIPs, netip.Addr.String)
	}},
	{"PORTS", func(s api.Service) string {
		return joinMap(s.Ports, func(p api.ServicePort) string {
			if p.NodePort != 0 {
				return fmt.Sprintf("%d:%d/%s (node %d)", p.Port, p.TargetPort, p.Protocol, p.NodePort)
			}
			return fmt.Sprintf("%d:%d/%s", p.Port, p.TargetPort, p.Protocol)
		})
	}},
	{"BACKENDS", func(s api.Service) string { return strconv.Itoa(len(s.Backends)) }},
	{"SELECTOR", func(s api.Service) string { return selectorString(s.Selector) }},
	{"SOURCE", func(s api.Service) string { return sourceString(s.Source) }},
}

// sourceString names where an object comes from: podnet's CLI, or the source that
// podnet controller mirrors.
func sourceString(source string) string {
	if source == "" {
		return "podnet"
	}
	return source
}

// selectorString renders a selector as k=v pairs in key order, comma-separated.
func selectorString(sel map[string]string) string {
	var pairs []string
	for _, k := range slices.Sorted(maps.Keys(sel)) {
		pairs = append(pairs, k+"="+sel[k])
	}
	return strings.Join(pairs, ",")
}

// joinMap joins f of each element with commas.
func joinMap[E any](s []E, f func(E) string) string {
	out := make([]string, len(s))
	for i, e := range s {
		out[i] = f(e)
	}
	return strings.Join(out, ",")
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
