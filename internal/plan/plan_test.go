package plan_test

import (
	"testing"

	"github.com/podnet/podnet/internal/plan"
)

func TestParseMAC(t *testing.T) {
	tests := []struct {
		in      string
		want    string // "" with wantErr == "": nil MAC
		wantErr string
		bug     string
	}{
		{in: ""},
		{in: "02:42:ac:11:00:02", want: "02:42:ac:11:00:02"},
		{in: "0A:58:0A:58:01:05", want: "0a:58:0a:58:01:05"},
		{in: "0a-58-0a-58-01-05", want: "0a:58:0a:58:01:05"},
		{in: "0a58.0a58.0105", want: "0a:58:0a:58:01:05"},
		{in: "00:16:3e:00:00:01", want: "00:16:3e:00:00:01"}, // universally administered unicast is allowed
		{in: "01:00:5e:00:00:01", wantErr: `mac "01:00:5e:00:00:01": multicast address cannot be an interface address`},
		{in: "33:33:00:00:00:01", wantErr: `mac "33:33:00:00:00:01": multicast address cannot be an interface address`},
		{in: "ff:ff:ff:ff:ff:ff", wantErr: `mac "ff:ff:ff:ff:ff:ff": multicast address cannot be an interface address`},
		{in: "03:00:00:00:00:00", wantErr: `mac "03:00:00:00:00:00": multicast address cannot be an interface address`},
		{in: "banana", wantErr: `mac "banana": not a 6-byte hardware address`},
		{in: "02:42:ac:11:00", wantErr: `mac "02:42:ac:11:00": not a 6-byte hardware address`},
		{in: "02:42:ac:11:00:02:03", wantErr: `mac "02:42:ac:11:00:02:03": not a 6-byte hardware address`},
		{in: "02:42:ac:11:00:0g", wantErr: `mac "02:42:ac:11:00:0g": not a 6-byte hardware address`},
		{in: " 02:42:ac:11:00:02", wantErr: `mac " 02:42:ac:11:00:02": not a 6-byte hardware address`},
		{in: "02:00:5e:10:00:00:00:01", wantErr: `mac "02:00:5e:10:00:00:00:01": not a 6-byte hardware address`}, // EUI-64
		{in: "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", // 20-byte InfiniBand
			wantErr: `mac "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01": not a 6-byte hardware address`},
		{in: "00:00:00:00:00:00", wantErr: `mac "00:00:00:00:00:00": the all-zero address cannot be an interface address`,
			bug: "the all-zero MAC is accepted; the kernel refuses it (EADDRNOTAVAIL) only when the veth is created"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := plan.ParseMAC(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Errorf("ParseMAC(%q) = %v, %v; want error %q", tt.in, got, err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("ParseMAC(%q) = %v with an error, want nil", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseMAC(%q): %v", tt.in, err)
			}
			if tt.want == "" {
				if got != nil {
					t.Errorf("ParseMAC(%q) = %v, want nil", tt.in, got)
				}
				return
			}
			if got.String() != tt.want {
				t.Errorf("ParseMAC(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}
