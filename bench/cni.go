package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// execTimeout bounds one plugin call, so that a hung plugin fails its row instead of
// hanging the benchmark.
const execTimeout = 30 * time.Second

// cniPlugin drives a CNI plugin binary the way a runtime does (cnitool, libcni): one
// exec per verb with CNI_* in the environment and the network config on stdin, from
// the node namespace. Like libcni, it passes the ADD result as prevResult to DEL.
type cniPlugin struct {
	tb      *testbed
	binary  string   // plugin executable
	cniPath string   // CNI_PATH, where the plugin finds delegates such as host-local
	conf    []byte   // network config
	env     []string // the environment without CNI_* variables
	results [][]byte // ADD output per pod index; each Add or Del touches only its own
}

func newCNIPlugin(tb *testbed, binary, cniPath string, conf any) (*cniPlugin, error) {
	b, err := json.Marshal(conf)
	if err != nil {
		return nil, fmt.Errorf("encode network config: %w", err)
	}
	return &cniPlugin{
		tb:      tb,
		binary:  binary,
		cniPath: cniPath,
		conf:    b,
		env:     pluginEnv(),
		results: make([][]byte, len(tb.sandboxes)),
	}, nil
}

func (p *cniPlugin) add(i int) error {
	out, err := p.exec("ADD", i, p.conf)
	if err != nil {
		return err
	}
	p.results[i] = out
	return nil
}

func (p *cniPlugin) del(i int) error {
	conf := p.conf
	if prev := p.results[i]; json.Valid(prev) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(p.conf, &m); err != nil {
			return fmt.Errorf("decode network config: %w", err)
		}
		m["prevResult"] = prev
		var err error
		if conf, err = json.Marshal(m); err != nil {
			return fmt.Errorf("encode network config: %w", err)
		}
	}
	if _, err := p.exec("DEL", i, conf); err != nil {
		return err
	}
	p.results[i] = nil
	return nil
}

// exec runs the plugin for one verb inside the node namespace and returns its stdout.
func (p *cniPlugin) exec(verb string, i int, conf []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.binary)
	// Clip: concurrent calls must not append into one shared backing array.
	cmd.Env = append(slices.Clip(p.env),
		"CNI_COMMAND="+verb,
		fmt.Sprintf("CNI_CONTAINERID=bench%08d", i),
		"CNI_NETNS="+p.tb.sandboxes[i],
		"CNI_IFNAME=eth0",
		"CNI_PATH="+p.cniPath,
	)
	cmd.Stdin = bytes.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := inNetns(p.tb.node, cmd.Run); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", p.binary, err, oneLine(stdout.String()+" "+stderr.String()))
	}
	return stdout.Bytes(), nil
}

// pluginEnv is this process's environment without CNI_* variables, with the sbin
// directories on PATH (the reference plugins look up iptables there).
func pluginEnv() []string {
	var env []string
	path := ""
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, "CNI_"):
		case strings.HasPrefix(kv, "PATH="):
			path = strings.TrimPrefix(kv, "PATH=")
		default:
			env = append(env, kv)
		}
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if !strings.Contains(":"+path+":", ":"+dir+":") {
			path = strings.TrimPrefix(path+":"+dir, ":")
		}
	}
	return append(env, "PATH="+path)
}

// oneLine squeezes a process's output into one short line for an error message.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
