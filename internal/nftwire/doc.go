// Package nftwire is nf_tables over netlink as podnet speaks it: batches, dumps,
// expression parsing and printing.
//
// internal/nft (podnet's tables) and internal/trace (the tracing tables, and the rules of
// every table a traced packet goes through) both talk to nf_tables through it, on netlink
// sockets bound to a network namespace's fd (Dial, Batch.SendNS): no goroutine changes
// namespace, and nothing execs nft.
//
//   - batch.go: a Batch queues the messages of one transaction (tables, with options such
//     as Owner; chains, sets, elements, rules) and Send runs it. google/nftables v0.3.0
//     marshals the expressions, but for ct loads of a tuple field, whose direction the
//     kernel wants as one byte (google/nftables leaves it out, or sends four).
//   - dump.go: DumpChains, DumpSets (with the elements of anonymous sets), DumpElems and
//     DumpRules read a table back. A rule's expressions are parsed with google/nftables
//     but for ct, whose one-byte direction it cannot read; an expression it has no type
//     for stays an Opaque one, so that a rule of any table still reads.
//   - print.go: Table.PrintExprs and Table.PrintRule print a rule's expressions in nft
//     syntax exactly as nft 1.0.6 (Debian 12) lists them, for podnet's rules and those
//     of other tools; print_privileged_test.go checks it against `nft -a list table` on
//     podnet's tables and foreign ones.
package nftwire
