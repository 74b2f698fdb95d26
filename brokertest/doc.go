// Package brokertest starts throwaway RabbitMQ nodes for tests that must own
// their broker: tests that stop or kill it, block it with a resource alarm,
// close its connections, or need a configuration (TLS, EXTERNAL auth, other
// limits) the shared system node does not have. The system node
// (rabbit@<host> on 127.0.0.1:5672) is never touched.
//
// A node is a separate Erlang VM started from the scripts of an installed
// rabbitmq-server package (by default /usr/lib/rabbitmq/bin, as on Debian and
// Ubuntu), isolated from every other node on the machine:
//
//   - its own node name (brokertest-<pid>-<n>@localhost) and Erlang cookie
//     (HOME points at the node's directory, so the CLI uses that cookie too);
//   - its own AMQP, AMQPS and Erlang distribution ports, chosen free by the
//     kernel (never 5671, 5672, 25672 or the CLI's 35672-35682), all
//     listening on 127.0.0.1 only; NodeOptions.Port (ClusterOptions.Ports
//     for a cluster) asks for a given AMQP port instead, if it is free;
//   - its own directory under os.TempDir for mnesia, logs, the pid file,
//     rabbitmq.conf, enabled_plugins, certificates and any erl_crash.dump;
//   - RABBITMQ_CONF_ENV_FILE pointing at an empty file, so the machine's
//     /etc/rabbitmq/rabbitmq-env.conf does not apply.
//
// Starting a node takes about five seconds, so a test binary usually shares
// one through a [SharedNode] stopped in TestMain; a test that needs a node of
// its own calls [StartNode], which stops it when the test ends. Even if the
// test binary dies without cleaning up (a -timeout panic, SIGKILL), a small
// watchdog process kills the node and removes its directory.
//
// When rabbitmq-server is not installed, [StartNode] and [SharedNode.Get]
// skip the test with a message saying how to install it, or fail it when the
// CI environment variable is set: CI must not pass by skipping.
//
// With [NodeOptions].TLS the node also listens for AMQPS with certificates
// generated in Go (a CA, a server certificate for localhost and 127.0.0.1, and
// a client certificate with CN=guest) and accepts SASL EXTERNAL, which logs
// the client in as the user its certificate's common name names.
package brokertest
