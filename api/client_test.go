package api

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name, in   string
		status     int
		body, fail string
	}{
		{"content length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, "hello", ""},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\n", 204, "", ""},
		{"close delimited", "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n{\"code\":101}", 404, `{"code":101}`, ""},
		{"chunked refused", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 0, "", "unsupported Transfer-Encoding"},
		{"garbage", "SSH-2.0-OpenSSH\r\n", 0, "", "malformed status line"},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", 0, "", "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, err := readResponse(bufio.NewReader(strings.NewReader(tt.in)))
			if tt.fail != "" {
				if err == nil || !strings.Contains(err.Error(), tt.fail) {
					t.Fatalf("err %v, want %q", err, tt.fail)
				}
				return
			}
			if err != nil || status != tt.status || string(body) != tt.body {
				t.Fatalf("got %d %q %v, want %d %q", status, body, err, tt.status, tt.body)
			}
		})
	}
}

func TestClientErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	_, err := NewClient(sock).Status(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeNotAvailable || !strings.Contains(e.Msg, sock) {
		t.Fatalf("unreachable agent: %v, want code %d naming %s", err, CodeNotAvailable, sock)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		bufio.NewReader(c).ReadString('\n')
		c.Write([]byte("HTTP/1.1 409 Conflict\r\nContent-Length: 43\r\n\r\n{\"code\":104,\"msg\":\"network \\\"x\\\" is busy\"}\n"))
		c.Close()
	}()
	err = NewClient(sock).DeleteNetwork(context.Background(), "x")
	if !errors.As(err, &e) || e.Code != CodeBusy || e.Msg != `network "x" is busy` {
		t.Fatalf("agent error: %v (%#v)", err, e)
	}
}
