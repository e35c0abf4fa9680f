package main

// throng hono: the "app" commands of Eclipse Hono's command line client
// (hono-cli, module cli of eclipse-hono/hono) against a Hono-compatible
// northbound AMQP 1.0 API — throng's (docs/hono.md) or Hono's own. Flags,
// defaults and output follow hono-cli, so that Hono's getting-started
// guide runs with "java -jar hono-cli-*-exec.jar" replaced by
// "throng hono" (docs/iot-quickstart.md). Differences are listed in
// honoUsage and in the quickstart.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/tenant"
)

const honoUsage = `Usage:
  throng hono app [connection options] consume [--tenant T] [--telemetry] [--event]
  throng hono app [connection options] command

Eclipse Hono's command line client (hono-cli) "app" commands, against the
northbound AMQP 1.0 API of throng or of Hono (telemetry/T, event/T,
command/T, command_response/T/<reply-id>).

Connection options (as hono-cli's):
  -H, --host HOST                      host to connect to (required unless --sandbox)
  -P, --port PORT                      port to connect to (required unless --sandbox)
  -u, --username USER                  user name (SASL PLAIN; with -p)
  -p, --password PASSWORD              password
      --ca-file FILE                   PEM file of trusted CA certificates: connect with TLS
      --disable-hostname-verification  do not match the server certificate against --host
      --sandbox                        Hono's sandbox (hono.eclipseprojects.io:15671, TLS)
      --amqp                           the AMQP 1.0 based API (the only one: accepted for
                                       hono-cli's command lines; Kafka is not supported)

consume prints each message on a line: "t" or "e", the device id, the
content type, the payload and the application properties, e.g.
  t 4711 text/plain hello {device_id=4711, orig_adapter=hono-mqtt, qos=0}
command reads commands from standard input ("help" lists them):
  ow  --tenant T --device D --name N [--payload P] [--content-type CT]
  req --tenant T --device D --name N [--payload P] [--content-type CT] [-r SECONDS]
  quit
${VAR} in their values is replaced by the environment variable VAR.
`

// Hono's sandbox, as hono-cli's ConnectionOptions and NorthBoundApis
// name it (its credentials are public).
const (
	honoSandboxHost     = "hono.eclipseprojects.io"
	honoSandboxAMQPPort = 15671
	honoSandboxUser     = "consumer@HONO"
	honoSandboxPassword = "verysecret"
)

// honoCommandPrompt is hono-cli's prompt of the command shell.
const honoCommandPrompt = "hono-cli/app/command> "

// hono runs "throng hono ..."; the command shell reads standard input.
func (c *cli) hono(ctx context.Context, args []string) error {
	return c.honoIO(ctx, args, os.Stdin)
}

func (c *cli) honoIO(ctx context.Context, args []string, in io.Reader) error {
	if len(args) == 0 {
		return usagef("hono needs a subcommand\n%s", strings.TrimRight(honoUsage, "\n"))
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(c.stdout, honoUsage)
		return nil
	case "app":
		return c.honoApp(ctx, args[1:], in)
	case "adapter":
		return usagef("hono adapter is not built: throng has no AMQP device adapter yet (docs/hono.md)")
	}
	return usagef("unknown command %q %q (want app)", "hono", args[0])
}

// honoConn holds hono-cli's connection options.
type honoConn struct {
	sandbox          bool
	host             string
	port             int
	caFile           string
	caFilePassword   string
	noHostnameVerify bool
	user, password   string
	amqp             bool
}

// aliasString registers a string flag under several names (hono-cli's
// "-t, --tenant").
func aliasString(fs *flag.FlagSet, p *string, def, usage string, names ...string) {
	for _, n := range names {
		fs.StringVar(p, n, def, usage)
	}
}

func (c *cli) honoApp(ctx context.Context, args []string, in io.Reader) error {
	fs := c.newFlagSet("hono app", "hono app [connection options] consume|command [options]")
	fs.Usage = func() { fmt.Fprint(c.stderr, honoUsage) }
	o := &honoConn{}
	fs.BoolVar(&o.sandbox, "sandbox", false, "connect to Hono's sandbox")
	aliasString(fs, &o.host, "", "host to connect to", "H", "host")
	fs.IntVar(&o.port, "P", 0, "port to connect to")
	fs.IntVar(&o.port, "port", 0, "port to connect to")
	aliasString(fs, &o.user, "", "user name", "u", "username")
	aliasString(fs, &o.password, "", "password", "p", "password")
	fs.StringVar(&o.caFile, "ca-file", "", "PEM file of trusted CA certificates")
	fs.StringVar(&o.caFilePassword, "ca-file-password", "", "password of the CA file")
	fs.BoolVar(&o.noHostnameVerify, "disable-hostname-verification", false, "do not verify the server's host name")
	fs.BoolVar(&o.amqp, "amqp", false, "the AMQP 1.0 based API")
	// Connection options come before the subcommand, as in hono-cli.
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usagef("hono app needs a command: consume or command")
	}
	if err := o.check(); err != nil {
		return err
	}
	switch rest[0] {
	case "consume":
		return c.honoConsume(ctx, o, rest[1:])
	case "command":
		return c.honoCommand(ctx, o, rest[1:], in)
	}
	return usagef("unknown command %q (want consume or command)", rest[0])
}

func (o *honoConn) check() error {
	if !o.sandbox && (o.host == "" || o.port == 0) {
		// hono-cli's message.
		return usagef("Missing required option: both '--host=<hostname>' and '--port=<portNumber>' need to be specified when not using '--sandbox'.")
	}
	if o.port < 0 || o.port > 65535 {
		return usagef("--port %d: want 1 to 65535", o.port)
	}
	if (o.user == "") != (o.password == "") {
		return usagef("Missing required argument(s): both '--username' and '--password' are needed")
	}
	if o.caFilePassword != "" {
		return usagef("--ca-file-password: throng hono reads PEM CA files only, which have no password")
	}
	return nil
}

// dial opens the AMQP connection: TLS with --ca-file or --sandbox, SASL
// PLAIN with credentials, else ANONYMOUS.
func (o *honoConn) dial(ctx context.Context, stderr io.Writer) (*amqp.Conn, error) {
	host, port, user, pw := o.host, o.port, o.user, o.password
	useTLS := o.caFile != ""
	if o.sandbox {
		host, port, useTLS = honoSandboxHost, honoSandboxAMQPPort, true
		if user == "" {
			user, pw = honoSandboxUser, honoSandboxPassword
		}
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	fmt.Fprintf(stderr, "Connecting to AMQP 1.0 based messaging infrastructure [%s]\n", addr)
	opts := &amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous()}
	if user != "" {
		opts.SASLType = amqp.SASLTypePlain(user, pw)
	}
	url := "amqp://" + addr
	if useTLS {
		cfg, err := o.tlsConfig(host)
		if err != nil {
			return nil, err
		}
		opts.TLSConfig = cfg
		url = "amqps://" + addr
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return amqp.Dial(ctx, url, opts)
}

func (o *honoConn) tlsConfig(host string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", o.caFile)
		}
		cfg.RootCAs = pool
	}
	if o.noHostnameVerify {
		// The chain is still verified, only not against the host name
		// (hono-cli's option; a literal IP address rarely is in a
		// certificate).
		roots := cfg.RootCAs
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("tls: the server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			return err
		}
	}
	return cfg, nil
}

// honoError is hono-cli's rendering of a failed service call
// ("Error: 503 - ..."): an HTTP-like status code and a message.
type honoError struct {
	status int
	msg    string
}

func (e *honoError) Error() string { return fmt.Sprintf("Error: %d - %s", e.status, e.msg) }

// honoErrorOf maps an AMQP error (a refused link, a connection loss) to
// the status Hono's client library would report.
func honoErrorOf(err error) error {
	var he *honoError
	if err == nil || errors.As(err, &he) {
		return err
	}
	var remote *amqp.Error
	var le *amqp.LinkError
	var se *amqp.SessionError
	var ce *amqp.ConnError
	switch {
	case errors.As(err, &le) && le.RemoteErr != nil:
		remote = le.RemoteErr
	case errors.As(err, &se) && se.RemoteErr != nil:
		remote = se.RemoteErr
	case errors.As(err, &ce) && ce.RemoteErr != nil:
		remote = ce.RemoteErr
	case errors.As(err, &remote):
	}
	if remote == nil {
		return &honoError{503, err.Error()}
	}
	status := 503
	switch remote.Condition {
	case amqp.ErrCondUnauthorizedAccess:
		status = 403
	case amqp.ErrCondNotFound:
		status = 404
	case amqp.ErrCondInvalidField, amqp.ErrCondDecodeError:
		status = 400
	case amqp.ErrCondResourceLimitExceeded:
		status = 429
	case amqp.ErrCondNotAllowed, amqp.ErrCondNotImplemented:
		status = 400
	}
	msg := remote.Description
	if msg == "" {
		msg = string(remote.Condition)
	}
	return &honoError{status, msg}
}

// ---- consume

func (c *cli) honoConsume(ctx context.Context, o *honoConn, args []string) error {
	fs := c.newFlagSet("hono app consume", "hono app [connection options] consume [--tenant T] [--telemetry] [--event]")
	var ten string
	aliasString(fs, &ten, tenant.Default, "the tenant to consume messages for", "t", "tenant")
	telemetry := fs.Bool("telemetry", false, "consume telemetry (default: telemetry and events)")
	event := fs.Bool("event", false, "consume events (default: telemetry and events)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if !*telemetry && !*event {
		*telemetry, *event = true, true
	}
	var sources []string
	if *event {
		sources = append(sources, "event/"+ten)
	}
	if *telemetry {
		sources = append(sources, "telemetry/"+ten)
	}
	out := &lineWriter{w: c.stdout}
	first := true
	for {
		// "Connecting to ..." once, not at every attempt to reconnect.
		progress := c.stderr
		if !first {
			progress = io.Discard
		}
		conn, recvs, err := o.consumers(ctx, progress, sources)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if first {
				err = honoErrorOf(err)
				fmt.Fprintln(c.stderr, err)
				return fmt.Errorf("failed to create message consumer(s): %s", strings.TrimPrefix(err.Error(), "Error: "))
			}
			// Hono's client reconnects; so does this one, every second.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		if first {
			fmt.Fprintf(c.stderr, "Consuming messages for tenant [%s], ctrl-c to exit.\n\n", ten)
			first = false
		}
		err = consumeAll(ctx, recvs, out)
		conn.Close()
		if ctx.Err() != nil {
			return nil
		}
		fmt.Fprintf(c.stderr, "peer has closed message consumer(s) unexpectedly, trying to reopen ... (%v)\n", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// honoCredit is the prefetch of each consumer (Hono's client default).
const honoCredit = 100

// consumers connects and attaches a receiver on each source.
func (o *honoConn) consumers(ctx context.Context, stderr io.Writer, sources []string) (*amqp.Conn, []*amqp.Receiver, error) {
	conn, err := o.dial(ctx, stderr)
	if err != nil {
		return nil, nil, err
	}
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s, err := conn.NewSession(actx, nil)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	var recvs []*amqp.Receiver
	for _, src := range sources {
		r, err := s.NewReceiver(actx, src, &amqp.ReceiverOptions{Credit: honoCredit})
		if err != nil {
			conn.Close()
			return nil, nil, err
		}
		recvs = append(recvs, r)
	}
	return conn, recvs, nil
}

// consumeAll prints and accepts what the receivers get until ctx ends or
// one of them fails; it returns that failure. One goroutine per receiver,
// all ended before it returns.
func consumeAll(ctx context.Context, recvs []*amqp.Receiver, out *lineWriter) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(recvs))
	var wg sync.WaitGroup
	for _, r := range recvs {
		kind := r.Address()[:1] // "t" or "e", as hono-cli prints them
		wg.Go(func() {
			for {
				m, err := r.Receive(ctx, nil)
				if err != nil {
					errc <- err
					return
				}
				out.line(formatDownstream(kind, m))
				if err := r.AcceptMessage(ctx, m); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	err := <-errc
	cancel()
	wg.Wait()
	return err
}

// lineWriter writes whole lines from several goroutines.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.w, s+"\n")
}

// formatDownstream renders a telemetry or event message as hono-cli's
// TelemetryAndEvent.printMessage: "<t|e> <device-id> <content-type>
// <payload> {<application properties>}", "-" for a missing content type
// or payload. The properties are Java's Map.toString, sorted by key here
// (Java's order is a hash map's).
func formatDownstream(kind string, m *amqp.Message) string {
	return fmt.Sprintf("%s %s %s %s %s", kind, orDash(stringProp(m, "device_id")), orDash(contentType(m)), payloadText(m), javaMap(m.ApplicationProperties))
}

func stringProp(m *amqp.Message, key string) string {
	if v, ok := m.ApplicationProperties[key]; ok && v != nil {
		return fmt.Sprint(javaValue(v))
	}
	return ""
}

func contentType(m *amqp.Message) string {
	if m.Properties != nil && m.Properties.ContentType != nil {
		return *m.Properties.ContentType
	}
	return ""
}

// payloadText is the body as text: its data sections, or an amqp-value
// string or binary (hono-cli's Buffer.toString); "-" without a body, and
// also for an empty one (hono-cli would print nothing there, which leaves
// two blanks in the line).
func payloadText(m *amqp.Message) string {
	var b strings.Builder
	for _, d := range m.Data {
		b.Write(d)
	}
	switch v := m.Value.(type) {
	case string:
		b.WriteString(v)
	case []byte:
		b.Write(v)
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

func javaMap(props map[string]any) string {
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%v", k, javaValue(props[k]))
	}
	b.WriteByte('}')
	return b.String()
}

func javaValue(v any) any {
	switch v := v.(type) {
	case nil:
		return "null"
	case []byte:
		return fmt.Sprintf("%x", v)
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	}
	return v
}

// ---- command

// honoShell is the command shell's state: one connection (opened at
// start, reopened after a failure), a command sender per tenant and a
// response receiver per tenant (command_response/T/<reply-id>, attached
// before the first request so that a quick response finds it).
type honoShell struct {
	c       *cli
	o       *honoConn
	conn    *amqp.Conn
	sess    *amqp.Session
	senders map[string]*amqp.Sender
	replies map[string]*honoReplies
	msgID   uint64
}

type honoReplies struct {
	replyID string
	r       *amqp.Receiver
}

func (c *cli) honoCommand(ctx context.Context, o *honoConn, args []string, in io.Reader) error {
	fs := c.newFlagSet("hono app command", "hono app [connection options] command")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	sh := &honoShell{c: c, o: o, senders: map[string]*amqp.Sender{}, replies: map[string]*honoReplies{}}
	if err := sh.connect(ctx); err != nil {
		fmt.Fprintln(c.stderr, "Failed to connect to Hono's Command & Control endpoint")
		return honoErrorOf(err)
	}
	defer sh.close()

	// Lines are read by one goroutine so that a signal (ctx) ends the
	// shell while it waits for input; it ends with the input (or stays
	// blocked on a terminal until the process exits).
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	// The prompt goes to standard error, so that standard output carries
	// only the responses ("res ..."). On a terminal it is printed before
	// each line (the terminal echoes what is typed); from a pipe or a file
	// it is printed with the line read, so that standard error is the
	// transcript a terminal would show.
	interactive := isTerminal(in)
	for {
		if interactive {
			fmt.Fprint(c.stderr, honoCommandPrompt)
		}
		var line string
		var ok bool
		select {
		case <-ctx.Done():
			if interactive {
				fmt.Fprintln(c.stderr)
			}
			return nil
		case line, ok = <-lines:
		}
		if !ok {
			if interactive {
				fmt.Fprintln(c.stderr)
			}
			return nil
		}
		if !interactive {
			fmt.Fprintf(c.stderr, "%s%s\n", honoCommandPrompt, line)
		}
		if quit := sh.execute(ctx, line); quit {
			return nil
		}
	}
}

// isTerminal reports whether r is a terminal (a character device).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (sh *honoShell) connect(ctx context.Context) error {
	conn, err := sh.o.dial(ctx, sh.c.stderr)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s, err := conn.NewSession(actx, nil)
	if err != nil {
		conn.Close()
		return err
	}
	sh.conn, sh.sess = conn, s
	return nil
}

func (sh *honoShell) close() {
	if sh.conn != nil {
		sh.conn.Close()
	}
	sh.conn, sh.sess = nil, nil
	clear(sh.senders)
	clear(sh.replies)
}

const honoShellHelp = `Commands:
  ow   send a one-way command:
       ow -t|--tenant T -d|--device D -n|--name NAME [--payload P] [--content-type CT]
  req  send a request-response command and print the response:
       req -t|--tenant T -d|--device D -n|--name NAME [--payload P] [--content-type CT] [-r|--response-timeout SECONDS]
  help this text
  quit leave (also exit, bye, ctrl-d)
The payload's content type is application/json if it starts with { and ends
with }, else text/plain, unless --content-type says otherwise.
${VAR} in a value is replaced by the environment variable VAR.
`

// execute runs one line of the shell; it reports whether to quit.
func (sh *honoShell) execute(ctx context.Context, line string) bool {
	c := sh.c
	words, err := splitWords(line)
	if err != nil {
		fmt.Fprintf(c.stderr, "%v\n", err)
		return false
	}
	if len(words) == 0 {
		return false
	}
	switch words[0] {
	case "quit", "exit", "bye":
		return true
	case "help", "-h", "--help":
		fmt.Fprint(c.stderr, honoShellHelp)
		return false
	case "ow", "req":
	default:
		fmt.Fprintf(c.stderr, "Unknown command: %s (help lists the commands)\n", words[0])
		return false
	}
	req := words[0] == "req"
	fs := flag.NewFlagSet(words[0], flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() { fmt.Fprint(c.stderr, honoShellHelp) }
	var o honoCommandOptions
	aliasString(fs, &o.tenant, tenant.Default, "the tenant the device belongs to", "t", "tenant")
	aliasString(fs, &o.device, "", "the device to send the command to", "d", "device")
	aliasString(fs, &o.name, "", "the command's name", "n", "name")
	fs.Func("payload", "the command's payload (text)", func(s string) error { o.payload = &s; return nil })
	fs.StringVar(&o.contentType, "content-type", "", "the payload's content type")
	timeout := "60"
	if req {
		aliasString(fs, &timeout, "60", "seconds to wait for the response", "r", "response-timeout")
	}
	pos, err := parseArgs(fs, words[1:])
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(c.stderr, err)
		}
		return false
	}
	if err := o.resolve(c.env, &timeout, pos); err != nil {
		fmt.Fprintln(c.stderr, err)
		return false
	}
	secs, err := strconv.Atoi(timeout)
	if err != nil || secs < 0 {
		fmt.Fprintf(c.stderr, "--response-timeout %q: want a number of seconds\n", timeout)
		return false
	}
	var resp *amqp.Message
	if req {
		resp, err = sh.request(ctx, &o, time.Duration(secs)*time.Second)
	} else {
		err = sh.oneWay(ctx, &o)
	}
	if err != nil {
		if ctx.Err() != nil {
			// ctrl-c while waiting: leave quietly.
			return true
		}
		err = honoErrorOf(err)
		fmt.Fprintln(c.stderr, "Cannot send command to device.")
		if he := (*honoError)(nil); errors.As(err, &he) && he.status == 503 {
			fmt.Fprintln(c.stderr, "Check if device is connected to a protocol adapter and has subscribed for commands as described in the protocol adapter user guides.")
		}
		fmt.Fprintln(c.stderr, err)
		if sh.conn != nil {
			// A broken connection is reopened for the next command.
			select {
			case <-sh.conn.Done():
				sh.close()
			default:
			}
		}
		return false
	}
	if resp != nil {
		fmt.Fprintln(c.stdout, formatResponse(resp))
	}
	return false
}

// honoCommandOptions are hono-cli's CommandSendingOptions.
type honoCommandOptions struct {
	tenant, device, name string
	payload              *string
	contentType          string
}

// resolve checks the options and replaces ${VAR} references in them
// (hono-cli's StringVariableConverter).
func (o *honoCommandOptions) resolve(e env, timeout *string, pos []string) error {
	if len(pos) > 0 {
		return fmt.Errorf("Unmatched argument: %q", pos[0])
	}
	for _, p := range []*string{&o.tenant, &o.device, &o.name, &o.contentType, o.payload, timeout} {
		if p == nil {
			continue
		}
		v, err := resolveVars(*p, e)
		if err != nil {
			return err
		}
		*p = v
	}
	switch {
	case o.device == "":
		return errors.New("Missing required option: '--device=<deviceId>'")
	case o.name == "":
		return errors.New("Missing required option: '--name=<commandName>'")
	}
	if o.contentType == "" {
		// hono-cli's rule.
		o.contentType = "text/plain"
		if o.payload != nil && strings.HasPrefix(*o.payload, "{") && strings.HasSuffix(*o.payload, "}") {
			o.contentType = "application/json"
		}
	}
	return nil
}

// resolveVars replaces each ${NAME} by the environment variable NAME; a
// variable that is not set is an error (as in hono-cli).
func resolveVars(s string, e env) (string, error) {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		name := s[i+2 : i+j]
		v, ok := e.lookup(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return "", fmt.Errorf("Environment does not contain variable with name %s", name)
		}
		b.WriteString(s[:i])
		b.WriteString(v)
		s = s[i+j+1:]
	}
}

func (e env) lookup(key string) (string, bool) {
	for i := len(e) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(e[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// splitWords splits a shell line into words: blanks separate them, single
// quotes keep everything literally, double quotes allow \" and \\, a
// backslash outside quotes escapes the next character.
func splitWords(line string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case ch == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("missing closing quote (')")
			}
			w.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case ch == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) && (line[i+1] == '"' || line[i+1] == '\\') {
					i++
				}
				w.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, errors.New(`missing closing quote (")`)
			}
			inWord = true
		case ch == '\\' && i+1 < len(line):
			i++
			w.WriteByte(line[i])
			inWord = true
		default:
			w.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// sender returns the command sender of a tenant (command/T).
func (sh *honoShell) sender(ctx context.Context, ten string) (*amqp.Sender, error) {
	if s := sh.senders[ten]; s != nil {
		return s, nil
	}
	if sh.conn == nil {
		if err := sh.connect(ctx); err != nil {
			return nil, err
		}
	}
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s, err := sh.sess.NewSender(actx, "command/"+ten, nil)
	if err != nil {
		return nil, err
	}
	sh.senders[ten] = s
	return s, nil
}

// responses returns the response receiver of a tenant.
func (sh *honoShell) responses(ctx context.Context, ten string) (*honoReplies, error) {
	if r := sh.replies[ten]; r != nil {
		return r, nil
	}
	if sh.conn == nil {
		if err := sh.connect(ctx); err != nil {
			return nil, err
		}
	}
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	id := newUUID()
	r, err := sh.sess.NewReceiver(actx, "command_response/"+ten+"/"+id, &amqp.ReceiverOptions{Credit: honoCredit})
	if err != nil {
		return nil, err
	}
	rr := &honoReplies{replyID: id, r: r}
	sh.replies[ten] = rr
	return rr, nil
}

func (sh *honoShell) message(o *honoCommandOptions) *amqp.Message {
	to := "command/" + o.tenant + "/" + o.device
	ct := o.contentType
	now := time.Now()
	m := &amqp.Message{Properties: &amqp.MessageProperties{To: &to, Subject: &o.name, ContentType: &ct, CreationTime: &now}}
	if o.payload != nil {
		m.Data = [][]byte{[]byte(*o.payload)}
	}
	return m
}

// send sends a command and waits for its outcome: accepted, or the
// error Hono's client reports (released: 503, rejected: 400).
func (sh *honoShell) send(ctx context.Context, ten string, m *amqp.Message) error {
	s, err := sh.sender(ctx, ten)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	rc, err := s.SendWithReceipt(sctx, m, nil)
	if err != nil {
		return err
	}
	st, err := rc.Wait(sctx)
	if err != nil {
		return err
	}
	switch st := st.(type) {
	case *amqp.StateAccepted:
		return nil
	case *amqp.StateRejected:
		msg := "the command was rejected"
		if st.Error != nil && st.Error.Description != "" {
			msg = st.Error.Description
		}
		return &honoError{400, msg}
	case *amqp.StateReleased:
		return &honoError{503, "the device is not connected (the command was released)"}
	case *amqp.StateModified:
		return &honoError{503, "the command was not delivered (modified)"}
	}
	return &honoError{500, fmt.Sprintf("unexpected outcome %T", st)}
}

func (sh *honoShell) oneWay(ctx context.Context, o *honoCommandOptions) error {
	return sh.send(ctx, o.tenant, sh.message(o))
}

// request sends a request-response command (message-id a counter, as
// Hono's request-response client; reply-to command_response/T/<reply-id>)
// and waits up to timeout for the response with that correlation id.
// Responses to earlier, timed-out requests are accepted and dropped.
func (sh *honoShell) request(ctx context.Context, o *honoCommandOptions, timeout time.Duration) (*amqp.Message, error) {
	rr, err := sh.responses(ctx, o.tenant)
	if err != nil {
		return nil, err
	}
	sh.msgID++
	id := strconv.FormatUint(sh.msgID, 36)
	m := sh.message(o)
	replyTo := "command_response/" + o.tenant + "/" + rr.replyID
	m.Properties.MessageID = id
	m.Properties.ReplyTo = &replyTo
	if err := sh.send(ctx, o.tenant, m); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		resp, err := rr.r.Receive(rctx, nil)
		if err != nil {
			if rctx.Err() != nil && ctx.Err() == nil {
				return nil, &honoError{503, fmt.Sprintf("no response within %v", timeout)}
			}
			return nil, err
		}
		_ = rr.r.AcceptMessage(ctx, resp)
		if resp.Properties == nil || fmt.Sprint(resp.Properties.CorrelationID) != id {
			continue
		}
		status, ok := statusOf(resp)
		if !ok {
			return nil, &honoError{500, "the response has no status"}
		}
		if status < 200 || status > 299 {
			// Hono's client fails the request with the device's status
			// and payload.
			msg := payloadText(resp)
			if msg == "-" {
				msg = ""
			}
			return nil, &honoError{status, msg}
		}
		return resp, nil
	}
}

func statusOf(m *amqp.Message) (int, bool) {
	switch v := m.ApplicationProperties["status"].(type) {
	case int32:
		return int(v), true
	case int64:
		return int(v), true
	case int:
		return v, true
	case uint32:
		return int(v), true
	case int16:
		return int(v), true
	}
	return 0, false
}

// formatResponse renders a response as hono-cli's printResponse: "res
// <device-id> <status> <content-type> <payload>".
func formatResponse(m *amqp.Message) string {
	status, _ := statusOf(m)
	return fmt.Sprintf("res %s %d %s %s", orDash(stringProp(m, "device_id")), status, orDash(contentType(m)), payloadText(m))
}

// newUUID returns a random (version 4) UUID, as Hono's client uses for
// reply ids.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
