// Package trace follows the packets of one flow through the netfilter hooks of a network
// namespace (podnet's node) and reports their path: interfaces, every nftables table,
// chain and rule they went through (podnet's and other tools'), each verdict, the NAT
// conntrack applied, and where a packet ended.
//
// How, in order (Run):
//
//   - Listen joins the nf_tables trace group (NFNLGRP_NFTRACE) of the namespace on a
//     netfilter netlink socket of its own (github.com/mdlayher/netlink; google/nftables
//     cannot receive trace messages) and decodes each NFT_MSG_TRACE message (Decode).
//   - fastpath.Bypass keeps the flow off podnet's eBPF fast path, if the node has one:
//     the packets it redirects between two pods of the node cross no hook.
//   - Mark creates (in an internal/nftwire batch, as internal/nft writes podnet's tables)
//     the tables inet and bridge TableName ("podnet-trace"), which mark the flow's packets
//     with meta nftrace set 1: in the original direction by their headers at the earliest
//     hooks (prerouting and output at raw - 1, bridge prerouting before the bridge
//     family's chains), replies and ICMP errors by their connection's original tuple right
//     after conntrack (untracked replies, as between two pods of one bridge, by their
//     headers); and empty chains at the end of every hook, whose policy events say
//     that a packet came through the hook. The tables are created with
//     NFT_TABLE_F_OWNER (nftwire.Owner): they belong to the marker's socket, Close deletes
//     them, and the kernel does when the process dies (an interrupt, a kill) — no other
//     table is touched.
//   - SendProbes sends probes from the source's namespace (TCP connect, a UDP datagram,
//     ICMP echo), or Run watches for traffic of the flow.
//   - After the marking is gone, ReadConntrack reads the flow's conntrack entries
//     (original and reply tuples: the NAT), LoadCatalog the chains and rules of the tables
//     the packets went through and the interfaces, LookupRoute the source's route
//     decision and the node's that explain a lost packet or a missing reply. Rules are
//     printed in nft syntax by internal/nftwire's printer, the one internal/nft renders
//     podnet's tables with, for any table: its privileged test checks it against `nft -a
//     list table` on podnet's tables and on foreign firewall tables.
//   - Build groups the events, a pure function of all that (recorded inputs give the
//     same report): events into base chain traversals (the kernel sends a packet's
//     headers, interfaces and conntrack view with the first event of each base chain),
//     traversals into connections by conntrack id (trace ids are not stable from one hook
//     to the next; a traversal before conntrack takes the id of the next one of the same
//     packet), connections into packets (a packet goes through hooks in order), packets
//     into hooks. A packet's fate is the rule or policy that dropped it, the interface it
//     left by, the node itself, or the hook after which it was not seen, with the node's
//     route decision when routing is what lost it.
//
// WriteText prints the report for people, WriteJSON for tools.
//
// Reading a path: each packet lists the hooks it came through, by family (bridge, ip,
// ip6: with br_netfilter, a bridged IP packet goes through both), with the interfaces,
// the chains of other tables than the marker's (podnet's included) and the rules that
// matched, each with its verdict; "leaves the hook as" shows a translation made in the
// hook. The marker's own chains are not shown: its end-of-hook chains only say that the
// packet came through.
//
// Limits: the conntrack view of trace events (NFTA_TRACE_CT_*) comes with Linux 6.16;
// before, packets are grouped by addresses and ports, and a NATed reply may be reported
// as a flow of its own. Replies are marked after conntrack, so the bridge family's
// prerouting chains and the inet raw chains do not show them. Tracing happens in one
// namespace: what the source sandbox does shows as its route decision only. Marking
// turns conntrack on in a namespace that had no use of it.
package trace
