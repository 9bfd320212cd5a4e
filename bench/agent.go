package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/podnet/podnet/internal/agentproc"
)

// agentStartTimeout bounds an agent's start until it answers STATUS ready.
const agentStartTimeout = 15 * time.Second

// startAgent starts binDir/podnet as the agent of tb's node namespace (--netns), with
// its socket, store and log in the testbed's directory, and flags, and waits until it is
// ready. On error nothing is left running.
func startAgent(binDir string, tb *testbed, flags ...string) (*agentproc.Proc, error) {
	bin := filepath.Join(binDir, "podnet")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s missing (make build)", bin)
	}
	a := agentproc.New(bin, filepath.Join(tb.dir, "podnet.sock"), filepath.Join(tb.dir, "agent.log"),
		append([]string{"--netns", tb.nodePath, "--state-dir", filepath.Join(tb.dir, "state")}, flags...)...)
	if err := a.Start(agentStartTimeout); err != nil {
		return nil, err
	}
	return a, nil
}
