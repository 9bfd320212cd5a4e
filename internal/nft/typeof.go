package nft

import (
	"strings"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/userdata"
)

// typeofExpr is an expression as nft records it in a set's user data to declare the set's
// key or data by "typeof EXPR": nft's expression type and its attributes, numbered from 0,
// or the fields of a concatenation. The numbers are nft's own (enum expr_types, enum
// proto_desc_id, the field indexes of its protocol templates) and part of its stable user
// data format; TestTypeofUdata holds the bytes nft 1.0.6 writes.
type typeofExpr struct {
	text   string
	etype  uint32
	attrs  []uint32
	fields []typeofExpr // of a concatenation
}

// nft's expression types (enum expr_types in nftables' include/expression.h).
const (
	etypePayload = 7
	etypeMeta    = 9
	etypeConcat  = 13
	etypeNumgen  = 23
)

// Expressions of the keys and data of podnet's typeof sets.
var (
	typeofIPDaddr  = typeofExpr{text: "ip daddr", etype: etypePayload, attrs: []uint32{12, 12}} // PROTO_DESC_IP, IPHDR_DADDR
	typeofIP6Daddr = typeofExpr{text: "ip6 daddr", etype: etypePayload, attrs: []uint32{13, 9}} // PROTO_DESC_IP6, IP6HDR_DADDR
	typeofTHDport  = typeofExpr{text: "th dport", etype: etypePayload, attrs: []uint32{11, 2}}  // PROTO_DESC_TH, THDR_DPORT
	typeofL4Proto  = typeofExpr{text: "meta l4proto", etype: etypeMeta, attrs: []uint32{16}}    // NFT_META_L4PROTO
	typeofIIFName  = typeofExpr{text: "iifname", etype: etypeMeta, attrs: []uint32{6}}          // NFT_META_IIFNAME
	// A raw payload: no protocol description, no template field, base, offset and length
	// in bits.
	typeofTaddr = typeofExpr{text: "@th,64,128", etype: etypePayload, attrs: []uint32{0, 0, 3, 64, 128}} // PROTO_BASE_TRANSPORT_HDR
	// The modulus is part of what nft prints, not of the type: any numgen has the type.
	typeofNumgen = typeofExpr{text: "numgen random mod 1", etype: etypeNumgen, attrs: []uint32{1, 1, 0}} // NFT_NG_RANDOM, mod 1, offset 0
)

// typeofTargets6 is the key of set endpoint_targets6.
var typeofTargets6 = typeofConcat(typeofIIFName, typeofTaddr)

// typeofConcat is the concatenation of fields.
func typeofConcat(fields ...typeofExpr) typeofExpr {
	texts := make([]string, len(fields))
	for i, f := range fields {
		texts[i] = f.text
	}
	return typeofExpr{text: strings.Join(texts, " . "), etype: etypeConcat, fields: fields}
}

// udata is the content of NFTNL_UDATA_SET_KEY_TYPEOF or NFTNL_UDATA_SET_DATA_TYPEOF for e:
// the expression type (attribute 0) and its data (attribute 1), each field of a
// concatenation nested under its index with its own type and data.
func (e typeofExpr) udata() []byte {
	out := appendU32(nil, 0, e.etype)
	return userdata.Append(out, 1, e.data())
}

func (e typeofExpr) data() []byte {
	var out []byte
	if e.etype == etypeConcat {
		for i, f := range e.fields {
			out = userdata.Append(out, userdata.Type(i), f.udata())
		}
		return out
	}
	for i, a := range e.attrs {
		out = appendU32(out, userdata.Type(i), a)
	}
	return out
}

// appendU32 appends a host-endian u32 attribute, as libnftnl's nftnl_udata_put_u32.
func appendU32(b []byte, t userdata.Type, v uint32) []byte {
	return userdata.Append(b, t, binaryutil.NativeEndian.PutUint32(v))
}
