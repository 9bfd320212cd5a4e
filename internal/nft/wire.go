package nft

import (
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/nftwire"
)

// podnet's tables as nf_tables messages (internal/nftwire writes, reads and prints them).
// Two things that nft needs to list the tables cannot be said through google/nftables
// v0.3.0, which is why podnet marshals its batches itself: the "typeof" user data of a
// set whose key has an integer field (without it nft 1.0.6 prints a type it cannot parse
// back), and the direction of a ct expression that loads an IPv4 or IPv6 address ("ct
// original ip daddr"), which nftwire marshals.

// wire is c as nftwire creates it; a base chain's policy is accept.
func (c chainDef) wire() nftwire.Chain {
	w := nftwire.Chain{Name: c.name}
	if c.base() {
		w.Type, w.Hook, w.Priority, w.Policy = string(c.typ), uint32(c.hook), int32(c.priority), "accept"
	}
	return w
}

// wire is s as nftwire creates it (without its elements).
func (s setDef) wire() nftwire.Set {
	var flags uint32
	if s.interval {
		flags |= unix.NFT_SET_INTERVAL
	}
	if s.isMap() {
		flags |= unix.NFT_SET_MAP
	}
	if s.timeout != 0 {
		flags |= unix.NFT_SET_TIMEOUT
	}
	if s.dynamic {
		flags |= unix.NFT_SET_EVAL
	}
	w := nftwire.Set{
		Name: s.name, Flags: flags, KeyType: s.keyType.GetNFTMagic(), KeyLen: s.keyType.Bytes,
		Timeout: s.timeout, Size: s.size, Userdata: s.userdata(),
	}
	if s.concat() {
		w.Flags |= nftables.NFT_SET_CONCAT
		w.FieldLens = s.keyFieldLens()
	}
	switch {
	case s.isVerdictMap():
		w.DataType, w.DataLen = unix.NFT_DATA_VERDICT, s.dataType.Bytes
	case s.isMap():
		w.DataType, w.DataLen = s.dataType.GetNFTMagic(), s.dataType.Bytes
	}
	return w
}

// keyFieldLens are the lengths of the fields of a concatenated key.
func (s setDef) keyFieldLens() []uint32 {
	if s.fieldLens != nil {
		return s.fieldLens
	}
	var out []uint32
	for _, field := range nftables.ConcatSetTypeElements(s.keyType) {
		out = append(out, field.Bytes)
	}
	return out
}

// userdata is what nft reads from a set's user data: the byte order of the key, the
// typeof expressions when the set has them, and the set's comment.
func (s setDef) userdata() []byte {
	ud := s.typeUserdata()
	if s.comment != "" {
		ud = userdata.AppendString(ud, userdata.NFTNL_UDATA_SET_COMMENT, s.comment)
	}
	return ud
}

// typeUserdata is the part of the user data that says how to print keys and data.
func (s setDef) typeUserdata() []byte {
	if s.typeofKey != nil {
		// As nft writes it for "typeof": byte orders 0 (nft takes them from the expressions).
		ud := userdata.AppendUint32(nil, userdata.NFTNL_UDATA_SET_KEYBYTEORDER, 0)
		ud = userdata.AppendUint32(ud, userdata.NFTNL_UDATA_SET_DATABYTEORDER, 0)
		ud = userdata.Append(ud, userdata.NFTNL_UDATA_SET_KEY_TYPEOF, s.typeofKey.udata())
		if s.typeofData != nil {
			ud = userdata.Append(ud, userdata.NFTNL_UDATA_SET_DATA_TYPEOF, s.typeofData.udata())
		}
		return ud
	}
	order := uint32(2) // BYTEORDER_BIG_ENDIAN
	if s.byteOrder() == binaryutil.NativeEndian {
		order = 1 // BYTEORDER_HOST_ENDIAN
	}
	return userdata.AppendUint32(nil, userdata.NFTNL_UDATA_SET_KEYBYTEORDER, order)
}

// wire is what printing a rule of t needs of t: its family and sets.
func (t tableDef) wire() nftwire.Table {
	sets := make(map[string]nftwire.Set, len(t.sets))
	for _, s := range t.sets {
		sets[s.name] = s.wire()
	}
	return nftwire.Table{Family: t.family, Sets: sets}
}

// printRule returns the nft syntax of exprs, a rule of table t, as nft 1.0.6 lists it.
func (t tableDef) printRule(exprs []expr.Any) string {
	return t.wire().PrintExprs(exprs)
}
