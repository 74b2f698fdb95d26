package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// NodeOptions configure a node started by [Start], [StartNode] or a
// [SharedNode]. The zero value starts a plain AMQP node with RabbitMQ's
// defaults.
type NodeOptions struct {
	// Name is the prefix of the Erlang node name, which becomes
	// Name-<pid>-<n>@localhost. Zero means "brokertest".
	Name string

	// Port is the node's plain AMQP port: the node listens on
	// 127.0.0.1:Port. Zero means a free port chosen by the kernel, as for
	// the node's other ports. A non-zero Port must be free: Start fails,
	// before starting anything, if something already listens on it (on any
	// interface), if another node of this process has it, or if it is a
	// port brokertest never uses (4369, 5671, 5672, 15672, 25672 and the
	// CLI's 35672-35682). Only the AMQP port can be chosen: the AMQPS and
	// Erlang distribution ports stay free-chosen. Stop makes Port available
	// to later nodes of this process.
	Port int

	// TLS adds an AMQPS listener on 127.0.0.1 with generated certificates
	// (see [TLSFiles]), verify_peer without requiring a client certificate,
	// and SASL EXTERNAL (plugin rabbitmq_auth_mechanism_ssl) next to PLAIN
	// and AMQPLAIN, with the user taken from the client certificate's
	// common name.
	TLS bool

	// Config holds extra rabbitmq.conf lines, such as "heartbeat = 10" or
	// "vm_memory_high_watermark.relative = 0.6". They are written after the
	// lines the options above produce.
	Config []string

	// Plugins lists extra plugins to enable at boot, such as
	// "rabbitmq_management".
	Plugins []string

	// StartTimeout bounds the boot, from rabbitmq-server -detached until
	// the rabbit application runs. Zero means two minutes.
	StartTimeout time.Duration

	// BinDir is the directory holding the rabbitmq-server and rabbitmqctl
	// scripts. Zero means $BROKERTEST_RABBITMQ_BIN if set, else
	// /usr/lib/rabbitmq/bin (Debian's and Ubuntu's package). The scripts
	// must be the real ones, not the /usr/sbin wrappers that switch to the
	// rabbitmq user and its cookie.
	BinDir string
}

// defaultBinDir is where Debian's rabbitmq-server package keeps the scripts
// that run as the caller (/usr/sbin has wrappers that su to rabbitmq).
const defaultBinDir = "/usr/lib/rabbitmq/bin"

// ErrNotInstalled reports that RabbitMQ (or Erlang) is not installed where
// brokertest looks for it.
var ErrNotInstalled = errors.New("brokertest: RabbitMQ is not installed")

// Installed reports whether a node can be started with the scripts in binDir
// (empty means the default, see [NodeOptions].BinDir): nil, or an error
// matching ErrNotInstalled that says what is missing.
func Installed(binDir string) error {
	dir := resolveBinDir(binDir)
	for _, script := range []string{"rabbitmq-server", "rabbitmqctl"} {
		path := filepath.Join(dir, script)
		if fi, err := os.Stat(path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("%w: no executable %s (install the rabbitmq-server package, e.g. with "+
				"scripts/ensure-rabbitmq.sh, or set BROKERTEST_RABBITMQ_BIN)", ErrNotInstalled, path)
		}
	}
	if _, err := exec.LookPath("erl"); err != nil {
		return fmt.Errorf("%w: Erlang's erl is not on PATH", ErrNotInstalled)
	}
	return nil
}

func resolveBinDir(dir string) string {
	if dir != "" {
		return dir
	}
	if env := os.Getenv("BROKERTEST_RABBITMQ_BIN"); env != "" {
		return env
	}
	return defaultBinDir
}

// requireInstalled skips t when RabbitMQ is not installed, or fails it under
// CI, and skips it in -short mode.
func requireInstalled(t testing.TB, binDir string) {
	t.Helper()
	if testing.Short() {
		t.Skip("brokertest: starts a RabbitMQ node; skipped with -short")
	}
	if err := Installed(binDir); err != nil {
		if inCI() {
			t.Fatalf("%v (CI is set, so this fails instead of skipping)", err)
		}
		t.Skip(err.Error())
	}
}

// inCI reports whether the CI environment variable asks for loud failures.
func inCI() bool {
	v := os.Getenv("CI")
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	return err != nil || b
}

// Node is a RabbitMQ node started by this package. Its methods are safe for
// concurrent use.
type Node struct {
	name     string // Erlang node name, e.g. brokertest-123-1@localhost
	dir      string
	binDir   string
	port     int
	portHeld bool // port came from NodeOptions.Port; Stop releases it
	tlsPort  int  // 0 without TLS
	distPort int
	tls      *TLSFiles
	pidFile  string
	logFile  string
	pid      int // OS pid of the node's Erlang VM

	watchdog     *exec.Cmd
	watchdogPipe *os.File // write end of the watchdog's stdin

	mu      sync.Mutex
	down    bool // killed or stopped: the VM is gone
	stopped bool // Stop ran: the directory is gone too
	stopErr error
}

var nodeCounter atomic.Int64

// Start starts a node and waits until it accepts connections. The caller
// must call Stop (or Kill, then Stop) when done; [StartNode] does that for a
// test. It returns an error matching ErrNotInstalled when RabbitMQ is missing.
func Start(opts NodeOptions) (*Node, error) {
	binDir := resolveBinDir(opts.BinDir)
	if err := Installed(binDir); err != nil {
		return nil, err
	}
	prefix := opts.Name
	if prefix == "" {
		prefix = "brokertest"
	}
	dir, err := os.MkdirTemp("", "brokertest-")
	if err != nil {
		return nil, fmt.Errorf("brokertest: %w", err)
	}
	n := &Node{
		name:    fmt.Sprintf("%s-%d-%d@localhost", prefix, os.Getpid(), nodeCounter.Add(1)),
		dir:     dir,
		binDir:  binDir,
		pidFile: filepath.Join(dir, "rabbit.pid"),
	}
	n.logFile = filepath.Join(dir, "log", n.name+".log")
	if err := n.boot(opts); err != nil {
		err = fmt.Errorf("brokertest: starting node %s: %w%s", n.name, err, n.diagnostics())
		n.Kill()
		n.Stop()
		return nil, err
	}
	return n, nil
}

// boot prepares the node's files and starts it.
func (n *Node) boot(opts NodeOptions) error {
	if err := n.prepare(opts); err != nil {
		return err
	}
	if err := n.startWatchdog(); err != nil {
		return err
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	// -detached returns at once; 'wait <pidfile>' then waits for the pid
	// file, Erlang distribution and the rabbit application, in that order.
	// (await_startup would fail straight away: the node has not registered
	// with epmd yet.)
	if _, err := n.run(ctx, "rabbitmq-server", "-detached"); err != nil {
		return err
	}
	secs := strconv.Itoa(int((timeout + time.Second - 1) / time.Second))
	waitCtx, failWait := context.WithCancelCause(ctx)
	stopWatching := n.watchBoot(failWait)
	_, err := n.run(waitCtx, "rabbitmqctl", "-n", n.name, "-q", "wait", "--timeout", secs, n.pidFile)
	stopWatching()
	if cause := context.Cause(waitCtx); cause != nil && cause != ctx.Err() {
		return cause // the VM died: say so rather than how wait noticed
	}
	if err != nil {
		return err
	}
	n.pid, err = readPID(n.pidFile)
	return err
}

// watchBoot watches a booting node until the returned stop function is
// called, and calls fail with the reason if the VM dies (it wrote a crash
// dump, or the process in the pid file is gone): 'rabbitmqctl wait' would
// otherwise wait out its whole timeout for a node that failed in prelaunch,
// for example on a bad configuration line.
func (n *Node) watchBoot(fail context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var crashSeen time.Time // when the crash dump appeared
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if dump, err := os.ReadFile(filepath.Join(n.dir, "erl_crash.dump")); err == nil {
				// Give the VM a moment to write the slogan, for diagnostics.
				if crashSeen.IsZero() {
					crashSeen = time.Now()
				}
				if !bytes.Contains(dump, []byte("\nSlogan:")) && time.Since(crashSeen) < 3*time.Second {
					continue
				}
				fail(errors.New("the node's Erlang VM crashed while booting"))
				return
			}
			if pid, err := readPID(n.pidFile); err == nil && !processAlive(pid) {
				fail(fmt.Errorf("the node's Erlang VM (pid %d) exited while booting", pid))
				return
			}
		}
	}()
	return func() { close(done); <-exited }
}

// StartNode starts a node for test t (see [Start]) and stops it when the
// test and its subtests have finished, logging the end of the node's log if
// the test failed. Without RabbitMQ installed it skips t, or fails it when
// the CI environment variable is set; it also skips t in -short mode.
func StartNode(t testing.TB, opts NodeOptions) *Node {
	t.Helper()
	requireInstalled(t, opts.BinDir)
	start := time.Now()
	n, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("brokertest: node %s ready in %v (amqp %s)", n.name, time.Since(start).Round(time.Millisecond), n.Addr())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("brokertest: end of %s:\n%s", n.logFile, tail(n.logFile, 40))
		}
		if err := n.Stop(); err != nil {
			t.Errorf("brokertest: %v", err)
		}
	})
	return n
}

// prepare writes the node's files and chooses its ports.
func (n *Node) prepare(opts NodeOptions) error {
	for _, sub := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(n.dir, sub), 0o700); err != nil {
			return err
		}
	}
	// The node and the CLI find the cookie in $HOME, which is n.dir: this
	// node cannot talk to any other, nor they to it.
	cookie := make([]byte, 20)
	if _, err := rand.Read(cookie); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(n.dir, ".erlang.cookie"), []byte(hex.EncodeToString(cookie)), 0o400); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(n.dir, "empty-env.conf"), nil, 0o600); err != nil {
		return err
	}

	var err error
	if opts.Port != 0 {
		if err := holdPort(opts.Port); err != nil {
			return err
		}
		n.port, n.portHeld = opts.Port, true
	} else if n.port, err = freePort(); err != nil {
		return err
	}
	if n.distPort, err = freePort(); err != nil {
		return err
	}
	plugins := append([]string(nil), opts.Plugins...)
	var conf []string
	if opts.TLS {
		if n.tlsPort, err = freePort(); err != nil {
			return err
		}
		if n.tls, err = writeTLSFiles(n.dir); err != nil {
			return err
		}
		plugins = append(plugins, "rabbitmq_auth_mechanism_ssl")
		conf = append(conf,
			fmt.Sprintf("listeners.ssl.default = 127.0.0.1:%d", n.tlsPort),
			"ssl_options.cacertfile = "+n.tls.CACert,
			"ssl_options.certfile = "+n.tls.ServerCert,
			"ssl_options.keyfile = "+n.tls.ServerKey,
			"ssl_options.verify = verify_peer",
			// Clients without a certificate may still log in with PLAIN.
			"ssl_options.fail_if_no_peer_cert = false",
			"ssl_options.versions.1 = tlsv1.3",
			"ssl_options.versions.2 = tlsv1.2",
			"auth_mechanisms.1 = PLAIN",
			"auth_mechanisms.2 = AMQPLAIN",
			"auth_mechanisms.3 = EXTERNAL",
			"ssl_cert_login_from = common_name",
		)
	}
	conf = append(conf, opts.Config...)
	if err := os.WriteFile(filepath.Join(n.dir, "rabbitmq.conf"), []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	enabled := "[" + strings.Join(plugins, ",") + "].\n"
	return os.WriteFile(filepath.Join(n.dir, "enabled_plugins"), []byte(enabled), 0o600)
}

// env is the environment of the node and of every CLI call against it: the
// caller's, without anything that configures RabbitMQ or Erlang, plus the
// node's own settings.
func (n *Node) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HOME" || strings.HasPrefix(k, "RABBITMQ_") || strings.HasPrefix(k, "ERL_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+n.dir,
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(n.dir, "empty-env.conf"),
		"RABBITMQ_NODENAME="+n.name,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(n.port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(n.distPort),
		// Erlang distribution (node and CLI traffic) on loopback only.
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
		"RABBITMQ_MNESIA_BASE="+filepath.Join(n.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(n.dir, "log"),
		"RABBITMQ_PID_FILE="+n.pidFile,
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(n.dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(n.dir, "rabbitmq"), // .conf is appended
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(n.dir, "advanced.config"),
		// A VM that dies in prelaunch writes its dump here, never into the
		// caller's working directory (the repository).
		"ERL_CRASH_DUMP="+filepath.Join(n.dir, "erl_crash.dump"),
	)
}

// run runs one of the RabbitMQ scripts against the node, in the node's
// directory, and returns its standard output. Output goes through files, not
// pipes: a daemon the script starts (epmd, the detached VM) must not keep a
// pipe open that Wait would wait for.
func (n *Node) run(ctx context.Context, script string, args ...string) (string, error) {
	out, err := os.CreateTemp(n.dir, "cmd-*.out")
	if err != nil {
		return "", err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	errOut, err := os.CreateTemp(n.dir, "cmd-*.err")
	if err != nil {
		return "", err
	}
	defer os.Remove(errOut.Name())
	defer errOut.Close()

	cmd := exec.CommandContext(ctx, filepath.Join(n.binDir, script), args...)
	cmd.Dir = n.dir
	cmd.Env = n.env()
	cmd.Stdout, cmd.Stderr = out, errOut
	runErr := cmd.Run()
	stdout, _ := os.ReadFile(out.Name())
	if runErr != nil {
		stderr, _ := os.ReadFile(errOut.Name())
		msg := strings.TrimSpace(string(stderr) + "\n" + string(stdout))
		return string(stdout), fmt.Errorf("%s %s: %w: %s", script, strings.Join(args, " "), runErr, msg)
	}
	return string(stdout), nil
}

// Ctl runs rabbitmqctl against the node (rabbitmqctl -n NODE args...) and
// returns its standard output. The error includes what it printed. Each call
// starts a CLI VM, which takes about half a second.
func (n *Node) Ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return n.run(ctx, "rabbitmqctl", append([]string{"-n", n.name}, args...)...)
}

// StopApp stops the RabbitMQ application on the node (rabbitmqctl
// stop_app), leaving its Erlang VM running: the server closes every client
// connection with 320 CONNECTION_FORCED ("broker forced connection closure
// with reason 'shutdown'") and stops listening, so new connections are
// refused, as during a broker restart. Durable queues, exchanges and
// bindings, users, vhosts and persistent messages stay on disk. StartApp
// starts the application again.
func (n *Node) StopApp() error {
	_, err := n.Ctl("-q", "stop_app")
	return err
}

// StartApp starts the RabbitMQ application stopped by StopApp (rabbitmqctl
// start_app, which returns once the application runs) and waits until the
// node accepts AMQP connections again.
func (n *Node) StartApp() error {
	if _, err := n.Ctl("-q", "start_app"); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", n.Addr(), time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("brokertest: node %s: start_app returned but %s does not answer: %w", n.name, n.Addr(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CloseConnection closes the client connection whose connection_name client
// property is connectionName, as rabbitmqctl close_connection does: the
// server sends connection.close 320 CONNECTION_FORCED with reason
// "CONNECTION_FORCED - " followed by reason. It fails if no such connection,
// or more than one, is open. It finds and closes the connection in one
// rabbitmqctl eval (one CLI VM start, about half a second), since tests call
// it often.
func (n *Node) CloseConnection(connectionName, reason string) error {
	// The name and reason go in as lists of bytes, so that no quoting or
	// escaping can go wrong. The property is {<<"connection_name">>, longstr,
	// Name} in the client_properties table.
	expr := fmt.Sprintf(`Name = list_to_binary(%s),
Reason = list_to_binary(%s),
Named = fun(P) ->
    case catch rabbit_networking:connection_info(P, [client_properties]) of
        [{client_properties, Props}] when is_list(Props) ->
            lists:any(fun(T) -> is_tuple(T) andalso tuple_size(T) >= 2 andalso
                element(1, T) =:= <<"connection_name">> andalso element(tuple_size(T), T) =:= Name end, Props);
        _ -> false
    end
end,
case lists:filter(Named, rabbit_networking:connections()) of
    [Pid] -> rabbit_networking:close_connection(Pid, Reason), brokertest_closed;
    Pids -> {brokertest_found, length(Pids)}
end.`, erlangBytes(connectionName), erlangBytes(reason))
	out, err := n.Ctl("eval", expr)
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "brokertest_closed" {
		return fmt.Errorf("brokertest: closing connection %q on %s: not exactly one such connection: %s",
			connectionName, n.name, strings.TrimSpace(out))
	}
	return nil
}

// erlangBytes returns s as an Erlang list of its bytes, such as [104,105].
func erlangBytes(s string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < len(s); i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(s[i])))
	}
	b.WriteByte(']')
	return b.String()
}

// ConnectionPID returns the Erlang pid (such as
// "<brokertest-1-1@localhost.1680000000.1234.0>") of the connection whose
// connection_name client property is connectionName, for rabbitmqctl
// commands. RabbitMQ 3.10 has no user_provided_name column, so it looks in
// the client properties.
func (n *Node) ConnectionPID(connectionName string) (string, error) {
	out, err := n.Ctl("-q", "list_connections", "--no-table-headers", "pid", "client_properties")
	if err != nil {
		return "", err
	}
	// The property prints as {"connection_name","NAME"} in 3.10 and as
	// {"connection_name",longstr,"NAME"} in some other versions.
	want := regexp.MustCompile(`\{"connection_name",(longstr,)?"` + regexp.QuoteMeta(connectionName) + `"\}`)
	var pids []string
	for line := range strings.Lines(out) {
		if want.MatchString(line) {
			pids = append(pids, strings.Fields(line)[0])
		}
	}
	if len(pids) != 1 {
		return "", fmt.Errorf("brokertest: %d connections named %q on %s; list_connections printed:\n%s",
			len(pids), connectionName, n.name, out)
	}
	return pids[0], nil
}

// Name returns the Erlang node name, such as "brokertest-1234-1@localhost".
func (n *Node) Name() string { return n.name }

// Dir returns the node's directory: mnesia, logs, configuration and
// certificates. It is removed by Stop.
func (n *Node) Dir() string { return n.dir }

// LogFile returns the path of the node's log file.
func (n *Node) LogFile() string { return n.logFile }

// PID returns the OS process id of the node's Erlang VM.
func (n *Node) PID() int { return n.pid }

// Addr returns the node's plain AMQP address, "127.0.0.1:<port>".
func (n *Node) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// URL returns an AMQP URL for the node as the guest user (who may log in
// from localhost only): amqp://guest:guest@127.0.0.1:<port>/.
func (n *Node) URL() string { return "amqp://guest:guest@" + n.Addr() + "/" }

// TLSAddr returns the node's AMQPS address, "localhost:<port>", whose name
// the server certificate covers (as it does 127.0.0.1). It is "" for a node
// started without TLS.
func (n *Node) TLSAddr() string {
	if n.tlsPort == 0 {
		return ""
	}
	return net.JoinHostPort("localhost", strconv.Itoa(n.tlsPort))
}

// TLSURL returns "amqps://localhost:<port>/", without credentials or TLS
// parameters, or "" for a node started without TLS.
func (n *Node) TLSURL() string {
	if n.tlsPort == 0 {
		return ""
	}
	return "amqps://" + n.TLSAddr() + "/"
}

// TLS returns the node's certificate files, or nil for a node started
// without TLS.
func (n *Node) TLS() *TLSFiles { return n.tls }

// ClientTLSConfig returns a TLS configuration that trusts the node's CA and
// presents the CN=guest client certificate (see [TLSFiles.ClientConfig]),
// or nil for a node started without TLS.
func (n *Node) ClientTLSConfig() *tls.Config {
	if n.tls == nil {
		return nil
	}
	return n.tls.ClientConfig()
}

// Kill kills the node's Erlang VM with SIGKILL, a crash without any goodbye
// to clients (their sockets are reset), and waits until the process is gone.
// The node's directory stays until Stop. Killing a node that is down is a
// no-op.
func (n *Node) Kill() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down {
		return nil
	}
	pid := n.pid
	if pid == 0 {
		// Killed while starting: the pid file may or may not exist yet.
		var err error
		if pid, err = readPID(n.pidFile); err != nil {
			n.down = true
			return nil
		}
	}
	if err := killProcess(pid, 30*time.Second); err != nil {
		return fmt.Errorf("brokertest: kill node %s: %w", n.name, err)
	}
	n.down = true
	return nil
}

// Stop stops the node gracefully and removes its directory. It sends the
// Erlang VM SIGTERM, on which RabbitMQ shuts down as for rabbitmqctl stop
// (closing client connections with 320 CONNECTION_FORCED) but without
// starting a CLI VM, and waits for the VM to exit; if it has not within a
// minute, it is killed. Stop is idempotent; after Kill it only removes the
// directory.
func (n *Node) Stop() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return n.stopErr
	}
	n.stopped = true
	var errs []error
	if !n.down && n.pid != 0 && processAlive(n.pid) {
		if err := terminateProcess(n.pid, time.Minute); err != nil {
			errs = append(errs, err)
		}
	}
	n.down = true
	n.stopWatchdog()
	if n.portHeld && len(errs) == 0 {
		// The VM is gone, so its listener is: the port may be asked for
		// again. (If the VM may still run, the port stays held.)
		releasePort(n.port)
		n.portHeld = false
	}
	if err := os.RemoveAll(n.dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		n.stopErr = fmt.Errorf("brokertest: stop node %s: %w", n.name, err)
	}
	return n.stopErr
}

// startWatchdog starts a shell, in a session of its own so that a Ctrl-C
// aimed at the test does not reach it, that waits on a pipe from this
// process. Stop writes a line to it and it exits; if this process dies
// first, the pipe reaches EOF and the shell kills the node and removes its
// directory, so no test run leaves a broker behind.
func (n *Node) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	const script = `if read -r _; then exit 0; fi
i=0
while [ ! -s "$1" ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done
[ -s "$1" ] && kill -KILL "$(cat "$1")" 2>/dev/null
rm -rf "$2"`
	cmd := exec.Command("/bin/sh", "-c", script, "brokertest-watchdog", n.pidFile, n.dir)
	cmd.Stdin = r
	cmd.Dir = os.TempDir()
	detach(cmd)
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return fmt.Errorf("watchdog: %w", err)
	}
	n.watchdog, n.watchdogPipe = cmd, w
	return nil
}

func (n *Node) stopWatchdog() {
	if n.watchdog == nil {
		return
	}
	n.watchdogPipe.WriteString("stopped\n")
	n.watchdogPipe.Close()
	n.watchdog.Wait()
	n.watchdog = nil
}

// diagnostics returns what helps explain a failed start: the ends of the
// node's log files and the slogan of a crash dump.
func (n *Node) diagnostics() string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(n.dir, "log", "*.log"))
	for _, f := range logs {
		if t := tail(f, 20); t != "" {
			fmt.Fprintf(&b, "\n--- end of %s:\n%s", filepath.Base(f), t)
		}
	}
	if dump, err := os.ReadFile(filepath.Join(n.dir, "erl_crash.dump")); err == nil {
		for line := range strings.Lines(string(dump)) {
			if strings.HasPrefix(line, "Slogan:") {
				fmt.Fprintf(&b, "\n--- erl_crash.dump %s(-detached discards the VM's console, where prelaunch "+
					"errors such as an unknown rabbitmq.conf setting are explained)", line)
				break
			}
		}
	}
	return b.String()
}

// tail returns the last lines of a file, or "" if it cannot be read.
func tail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	data = bytes.TrimRight(data, "\n")
	all := strings.Split(string(data), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

func readPID(pidFile string) (int, error) {
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds %q", pidFile, data)
	}
	return pid, nil
}

// Ports never handed to a node: epmd, the system node's AMQP, AMQPS, dist and
// management ports, and the range RabbitMQ's CLI tools use for distribution.
func reservedPort(p int) bool {
	switch p {
	case 4369, 5671, 5672, 15672, 25672:
		return true
	}
	return 35672 <= p && p <= 35682
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{} // never hand the same port to two nodes of this process
)

// holdPort reserves port p, asked for with NodeOptions.Port, for a node of
// this process until releasePort. It refuses a port that brokertest never
// uses, one that another node of this process has (or that freePort handed
// out, which stays given), and one that something already listens on.
func holdPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("AMQP port %d is not a TCP port", p)
	}
	if reservedPort(p) {
		return fmt.Errorf("AMQP port %d is reserved: brokertest never uses 4369, 5671, 5672, 15672, "+
			"25672 or 35672-35682 (epmd, the system node and the CLI)", p)
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	if portsGiven[p] {
		return fmt.Errorf("AMQP port %d is already given to another node of this process", p)
	}
	if err := checkNotListening(p); err != nil {
		return fmt.Errorf("AMQP port %d is not free: %w", p, err)
	}
	portsGiven[p] = true
	return nil
}

// releasePort makes a port held by holdPort available again.
func releasePort(p int) {
	portsMu.Lock()
	defer portsMu.Unlock()
	delete(portsGiven, p)
}

// checkNotListening returns an error if something listens on TCP port p:
// on 127.0.0.1, where a connection would reach it, or on any interface,
// which a wildcard listener (the dual-stack [::]:p) would collide with.
func checkNotListening(p int) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("something already listens on %s", addr)
	}
	l, err := net.Listen("tcp", ":"+strconv.Itoa(p))
	if err != nil {
		return fmt.Errorf("cannot listen on it: %w", err)
	}
	return l.Close()
}

// freePort returns a TCP port that nothing listens on, on any interface, as
// the kernel chose it for a wildcard listener.
func freePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			return 0, fmt.Errorf("brokertest: finding a free port: %w", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !reservedPort(p) && !portsGiven[p] {
			portsGiven[p] = true
			return p, nil
		}
	}
	return 0, errors.New("brokertest: no free port found")
}

// SharedNode is a node that the tests of one binary share: it is started by
// the first Get and stopped by Stop, which TestMain calls after m.Run. A
// node takes about five seconds to start, so sharing one keeps a suite fast;
// a test that changes the node's state (a memory alarm, say) must undo it.
//
//	var node = &brokertest.SharedNode{Options: brokertest.NodeOptions{TLS: true}}
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		if err := node.Stop(); err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			code = 1
//		}
//		os.Exit(code)
//	}
type SharedNode struct {
	Options NodeOptions

	mu      sync.Mutex
	started bool
	node    *Node
	err     error
}

// Get returns the shared node, starting it on first use; concurrent callers
// wait for that start. Like [StartNode] it skips t (or fails it under CI)
// when RabbitMQ is not installed, and in -short mode. If the node failed to
// start, every test that asks for it fails with that error.
func (s *SharedNode) Get(t testing.TB) *Node {
	t.Helper()
	requireInstalled(t, s.Options.BinDir)
	s.mu.Lock()
	if !s.started {
		s.started = true
		start := time.Now()
		s.node, s.err = Start(s.Options)
		if s.err == nil {
			t.Logf("brokertest: shared node %s ready in %v (amqp %s)",
				s.node.name, time.Since(start).Round(time.Millisecond), s.node.Addr())
		}
	}
	n, err := s.node, s.err
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Stop stops the shared node if it was started. Later calls to Get fail.
func (s *SharedNode) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		s.started = true
		s.err = errors.New("brokertest: shared node used after Stop")
		return nil
	}
	if s.node == nil {
		return nil
	}
	err := s.node.Stop()
	s.node, s.err = nil, errors.New("brokertest: shared node used after Stop")
	return err
}
