package brokertest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// ClusterOptions configure a cluster started by [StartCluster] or
// [NewCluster].
type ClusterOptions struct {
	// Size is the number of nodes. Zero means 2.
	Size int

	// Node configures every node, as for [Start]. Its Name defaults to
	// "brokertest-cluster". Its Port must be zero, since no two nodes can
	// share a port: set Ports instead.
	Node NodeOptions

	// Ports sets the nodes' plain AMQP ports: node i listens on
	// 127.0.0.1:Ports[i] if i < len(Ports) and Ports[i] is not zero, and on
	// a free port chosen by the kernel otherwise (as when Ports is nil).
	// Each port is subject to the rules of [NodeOptions].Port: the cluster
	// fails to start if one is already listened on. Ports must not be
	// longer than the cluster nor name a port twice. The nodes' AMQPS and
	// Erlang distribution ports stay free-chosen.
	Ports []int
}

// Cluster is a RabbitMQ cluster of nodes started by this package: nodes
// like those of [Start] (their own ports, directories and watchdogs), joined
// into one cluster with rabbitmqctl join_cluster. Its methods are safe for
// concurrent use.
type Cluster struct {
	nodes []*Node

	stopOnce sync.Once
	stopErr  error
}

// NewCluster starts opts.Size nodes in parallel and joins every node to the
// first one, so that they form one cluster: queues, exchanges and bindings
// declared through any node are seen through every node, and a message
// published through one node reaches a queue that lives on another.
//
// Each node starts with a cookie of its own (see [Start]); before joining,
// a node is given the first node's cookie, at run time (erlang:set_cookie)
// and in its directory's .erlang.cookie for the CLI. No other node on the
// machine shares that cookie, so the cluster stays isolated.
//
// The caller must call Stop; [StartCluster] does that for a test. It returns
// an error matching ErrNotInstalled when RabbitMQ is missing.
func NewCluster(opts ClusterOptions) (*Cluster, error) {
	size := opts.Size
	if size == 0 {
		size = 2
	}
	if size < 1 {
		return nil, fmt.Errorf("brokertest: cluster size %d", size)
	}
	if len(opts.Ports) > size {
		return nil, fmt.Errorf("brokertest: %d ports for a cluster of %d nodes", len(opts.Ports), size)
	}
	seen := make(map[int]bool, len(opts.Ports))
	for _, p := range opts.Ports {
		if p != 0 && seen[p] {
			return nil, fmt.Errorf("brokertest: cluster ports %v name port %d twice", opts.Ports, p)
		}
		seen[p] = true
	}
	nodeOpts := opts.Node
	if nodeOpts.Port != 0 {
		return nil, fmt.Errorf("brokertest: ClusterOptions.Node.Port is %d: set ClusterOptions.Ports, "+
			"since the nodes cannot share a port", nodeOpts.Port)
	}
	if nodeOpts.Name == "" {
		nodeOpts.Name = "brokertest-cluster"
	}
	if err := Installed(nodeOpts.BinDir); err != nil {
		return nil, err
	}

	c := &Cluster{nodes: make([]*Node, size)}
	errs := make([]error, size)
	var wg sync.WaitGroup
	for i := range size {
		o := nodeOpts
		if i < len(opts.Ports) {
			o.Port = opts.Ports[i]
		}
		wg.Go(func() { c.nodes[i], errs[i] = Start(o) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Stop()
		return nil, err
	}
	for _, n := range c.nodes[1:] {
		if err := c.join(n); err != nil {
			err = fmt.Errorf("brokertest: joining %s to %s: %w%s", n.name, c.nodes[0].name, err, n.diagnostics())
			c.Stop()
			return nil, err
		}
	}
	running, err := c.RunningNodes()
	if err == nil && len(running) != size {
		err = fmt.Errorf("brokertest: %d of %d nodes running in the cluster after joining: %v", len(running), size, running)
	}
	if err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// join makes n a member of the first node's cluster.
func (c *Cluster) join(n *Node) error {
	first := c.nodes[0]
	cookie, err := os.ReadFile(filepath.Join(first.dir, ".erlang.cookie"))
	if err != nil {
		return err
	}
	cookie = []byte(strings.TrimSpace(string(cookie)))
	if !regexp.MustCompile(`^[0-9a-f]+$`).Match(cookie) {
		return fmt.Errorf("unexpected cookie format in %s", first.dir)
	}
	// Switch n to the first node's cookie: at run time for the node (the
	// CLI still connects with n's old cookie for this call), then on disk
	// for later CLI calls.
	if _, err := n.Ctl("eval", fmt.Sprintf("erlang:set_cookie(node(), '%s').", cookie)); err != nil {
		return err
	}
	path := filepath.Join(n.dir, ".erlang.cookie")
	if err := os.Chmod(path, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(path, cookie, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(path, 0o400); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"-q", "stop_app"},
		{"-q", "reset"},
		{"-q", "join_cluster", first.name},
		{"-q", "start_app"},
	} {
		if _, err := n.Ctl(args...); err != nil {
			return err
		}
	}
	return nil
}

// StartCluster starts a cluster for test t (see [NewCluster]) and stops it
// when the test and its subtests have finished, logging the end of each
// node's log if the test failed. Like [StartNode], without RabbitMQ
// installed it skips t, or fails it when the CI environment variable is set;
// it also skips t in -short mode. A two-node cluster takes about 15 seconds
// to form on two cores.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	requireInstalled(t, opts.Node.BinDir)
	start := time.Now()
	c, err := NewCluster(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("brokertest: cluster of %d nodes ready in %v (amqp %s)", len(c.nodes),
		time.Since(start).Round(time.Millisecond), strings.Join(c.Addrs(), ", "))
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.nodes {
				t.Logf("brokertest: end of %s:\n%s", n.logFile, tail(n.logFile, 40))
			}
		}
		if err := c.Stop(); err != nil {
			t.Errorf("brokertest: %v", err)
		}
	})
	return c
}

// Nodes returns the cluster's nodes; the first is the one the others joined.
func (c *Cluster) Nodes() []*Node { return append([]*Node(nil), c.nodes...) }

// Node returns the i-th node (from 0).
func (c *Cluster) Node(i int) *Node { return c.nodes[i] }

// Addrs returns every node's plain AMQP address, "127.0.0.1:<port>", in
// node order.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// URL returns an AMQP URL naming every node, in order, as the guest user:
// amqp://guest:guest@127.0.0.1:<port1>,127.0.0.1:<port2>/. A client tries
// the addresses in order until one answers.
func (c *Cluster) URL() string {
	return "amqp://guest:guest@" + strings.Join(c.Addrs(), ",") + "/"
}

// RunningNodes returns the Erlang names of the cluster's running nodes, as
// the first node sees them (rabbit_nodes:all_running/0).
func (c *Cluster) RunningNodes() ([]string, error) {
	out, err := c.nodes[0].Ctl("eval", "rabbit_nodes:all_running().")
	if err != nil {
		return nil, err
	}
	// Printed as an Erlang list of atoms: ['a@localhost','b@localhost'].
	var names []string
	for _, m := range regexp.MustCompile(`'([^']+)'|([A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+)`).FindAllStringSubmatch(out, -1) {
		names = append(names, m[1]+m[2])
	}
	return names, nil
}

// Stop stops every node in parallel and removes their directories (see
// [Node.Stop]). It is idempotent.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		errs := make([]error, len(c.nodes))
		var wg sync.WaitGroup
		for i, n := range c.nodes {
			if n != nil {
				wg.Go(func() { errs[i] = n.Stop() })
			}
		}
		wg.Wait()
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}
