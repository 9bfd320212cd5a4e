package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// execTimeout bounds one plugin call, so that a hung plugin fails its row instead of
// hanging the benchmark.
const execTimeout = 30 * time.Second

// cniVersion is the version of every network config the benchmark hands out.
const cniVersion = "1.0.0"

// capabilityArgs returns the capability arguments a runtime has for pod i (libcni's
// RuntimeConf.CapabilityArgs), e.g. "portMappings".
type capabilityArgs func(i int) map[string]any

// cniRuntime drives a network configuration list (a conflist) the way a runtime does
// (libcni, cnitool): one exec per plugin and verb with CNI_* in the environment and
// the plugin's config on stdin, from the node namespace. Like libcni, ADD calls the
// plugins in order, each with the previous one's result as prevResult; DEL calls them
// in reverse order with the result of the whole ADD; a plugin's config gets the
// list's name and cniVersion, and runtimeConfig with the capability arguments it
// declares in "capabilities".
type cniRuntime struct {
	tb      *testbed
	cniPath string           // CNI_PATH: the plugins, and delegates such as host-local
	plugins []map[string]any // the list's plugin configs, without name and cniVersion
	args    capabilityArgs   // nil: none
	env     []string         // the environment without CNI_* variables
	results [][]byte         // ADD output per pod index; each Add or Del touches only its own
}

func newCNIRuntime(tb *testbed, cniPath string, plugins []map[string]any, args capabilityArgs) *cniRuntime {
	return &cniRuntime{
		tb:      tb,
		cniPath: cniPath,
		plugins: plugins,
		args:    args,
		env:     pluginEnv(),
		results: make([][]byte, len(tb.sandboxes)),
	}
}

func (r *cniRuntime) add(i int) error {
	var prev []byte
	for _, plugin := range r.plugins {
		out, err := r.exec("ADD", i, plugin, prev)
		if err != nil {
			return err
		}
		prev = out
	}
	r.results[i] = prev
	return nil
}

func (r *cniRuntime) del(i int) error {
	prev := r.results[i]
	if !json.Valid(prev) {
		prev = nil
	}
	for _, plugin := range slices.Backward(r.plugins) {
		if _, err := r.exec("DEL", i, plugin, prev); err != nil {
			return err
		}
	}
	r.results[i] = nil
	return nil
}

// pluginConf is what plugin gets on stdin for pod i.
func (r *cniRuntime) pluginConf(i int, plugin map[string]any, prev []byte) ([]byte, error) {
	conf := map[string]any{"name": "bench", "cniVersion": cniVersion}
	for k, v := range plugin {
		conf[k] = v
	}
	if caps, _ := plugin["capabilities"].(map[string]bool); len(caps) > 0 && r.args != nil {
		rc := map[string]any{}
		for name, arg := range r.args(i) {
			if caps[name] {
				rc[name] = arg
			}
		}
		if len(rc) > 0 {
			conf["runtimeConfig"] = rc
		}
	}
	if prev != nil {
		conf["prevResult"] = json.RawMessage(prev)
	}
	b, err := json.Marshal(conf)
	if err != nil {
		return nil, fmt.Errorf("encode network config: %w", err)
	}
	return b, nil
}

// exec runs plugin for one verb inside the node namespace and returns its stdout.
func (r *cniRuntime) exec(verb string, i int, plugin map[string]any, prev []byte) ([]byte, error) {
	conf, err := r.pluginConf(i, plugin, prev)
	if err != nil {
		return nil, err
	}
	binary := filepath.Join(r.cniPath, fmt.Sprint(plugin["type"]))
	ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary)
	// Clip: concurrent calls must not append into one shared backing array.
	cmd.Env = append(slices.Clip(r.env),
		"CNI_COMMAND="+verb,
		fmt.Sprintf("CNI_CONTAINERID=bench%08d", i),
		"CNI_NETNS="+r.tb.sandboxes[i],
		"CNI_IFNAME=eth0",
		"CNI_PATH="+r.cniPath,
	)
	cmd.Stdin = bytes.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := inNetns(r.tb.node, cmd.Run); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", binary, err, oneLine(stdout.String()+" "+stderr.String()))
	}
	return stdout.Bytes(), nil
}

// pluginTypes lists the "type" of each plugin config.
func pluginTypes(plugins []map[string]any) []string {
	var types []string
	for _, p := range plugins {
		types = append(types, fmt.Sprint(p["type"]))
	}
	return types
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
