package testkit_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/testkit"
)

// docs/iot-quickstart.md as a test (issue 13): Eclipse Hono's
// getting-started flow — registry calls with curl, an application with
// `throng hono app`, devices with curl and mosquitto — run from the page's
// own sh blocks with bash, one bash per terminal the guide opens, against
// a platform on random ports. The `<!-- test: … -->` comment in front of
// each sh block says how (see qsDirective); the checks of each step are
// here (quickstartSteps).

const quickstartDoc = "../../docs/iot-quickstart.md"

// qsBlock is one sh block of the page with its directive.
type qsBlock struct {
	line int    // of the opening fence
	text string // the block's lines, each ending in "\n"
	qsDirective
}

// qsDirective is a `<!-- test: ... -->` comment:
//
//	terminal=NAME  the terminal (bash) the block runs in; default "main"
//	background     the block starts a program that keeps running; the
//	               terminal's later blocks are typed into it
//	interrupt      ctrl-c the terminal's program first
//	set=VAR        replace the value of "VAR=..." in the block by the one
//	               an earlier step found (an id, a request id)
//	env            the hono.env block: localhost and the default ports
//	               become the test's
//	step=NAME      check the step's result (quickstartSteps)
//	skip (why)     not run
type qsDirective struct {
	terminal, set, step   string
	background, interrupt bool
	env, skip             bool
}

var qsDirectiveRE = regexp.MustCompile(`^<!-- test(?::\s*(.*?))?\s*-->$`)

// parseQuickstart returns the page's sh blocks; every one must have a
// directive on the line before its fence.
func parseQuickstart(t *testing.T, path string) []qsBlock {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	var blocks []qsBlock
	for i := 0; i < len(lines); i++ {
		fence := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(fence, "```") {
			continue
		}
		start := i
		var b strings.Builder
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			b.WriteString(lines[i] + "\n")
		}
		if i == len(lines) {
			t.Fatalf("%s:%d: fence not closed", path, start+1)
		}
		if fence != "```sh" {
			continue // output, or another language
		}
		var m []string
		if start > 0 {
			m = qsDirectiveRE.FindStringSubmatch(strings.TrimSpace(lines[start-1]))
		}
		if m == nil {
			t.Fatalf("%s:%d: an sh block without a <!-- test: ... --> directive on the line before", path, start+1)
		}
		blk := qsBlock{line: start + 1, text: b.String(), qsDirective: qsDirective{terminal: "main"}}
		for _, tok := range strings.Fields(m[1]) {
			k, v, _ := strings.Cut(tok, "=")
			switch {
			case k == "skip":
				blk.skip = true
			case k == "terminal" && v != "":
				blk.terminal = v
			case k == "set" && v != "":
				blk.set = v
			case k == "step" && v != "":
				blk.step = v
			case tok == "background":
				blk.background = true
			case tok == "interrupt":
				blk.interrupt = true
			case tok == "env":
				blk.env = true
			default:
				t.Fatalf("%s:%d: unknown directive %q", path, start, tok)
			}
			if blk.skip {
				break // the rest is the reason
			}
		}
		blocks = append(blocks, blk)
	}
	return blocks
}

// qsTerminal is one terminal of the guide: a bash reading the blocks from
// a pipe, in its own process group (ctrl-c is SIGINT to the group; bash
// traps it so that only the program in the foreground ends).
type qsTerminal struct {
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *qsBuffer
	busy bool // a background program is running
	n    int
}

type qsBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (q *qsBuffer) Write(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.b.Write(p)
}

func (q *qsBuffer) String() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.b.String()
}

func startTerminal(t *testing.T, name, bash, dir string, environ []string) *qsTerminal {
	t.Helper()
	cmd := exec.Command(bash, "--noprofile", "--norc")
	cmd.Dir, cmd.Env = dir, environ
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &qsBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	term := &qsTerminal{name: name, cmd: cmd, in: in, out: out}
	term.write(t, "trap : INT\n")
	t.Cleanup(func() {
		pid := cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGINT)
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("terminal %s:\n%s", name, out.String())
		}
	})
	return term
}

func (q *qsTerminal) write(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(q.in, s); err != nil {
		t.Fatalf("terminal %s: %v", q.name, err)
	}
}

// run types a block; unless it starts or feeds a program that keeps
// running, it waits for the block to end and returns what it printed.
func (q *qsTerminal) run(t *testing.T, b qsBlock, text string) string {
	t.Helper()
	if b.interrupt {
		if err := syscall.Kill(-q.cmd.Process.Pid, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		q.busy = false
	}
	if q.busy || b.background {
		// Typed into the running program (or starting one): no end to
		// wait for.
		q.write(t, text)
		q.busy = true
		return ""
	}
	q.n++
	start := len(q.out.String())
	q.write(t, text+fmt.Sprintf("printf '\\n@@quickstart %d rc=%%d\\n' $?\n", q.n))
	re := regexp.MustCompile(fmt.Sprintf(`\n@@quickstart %d rc=(\d+)\n`, q.n))
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out := q.out.String()[start:]
		if m := re.FindStringSubmatchIndex(out); m != nil {
			if rc := out[m[2]:m[3]]; rc != "0" {
				t.Fatalf("docs/iot-quickstart.md:%d (terminal %s): exit status %s:\n%s%s", b.line, q.name, rc, text, out[:m[0]])
			}
			return out[:m[0]]
		}
		if time.Now().After(deadline) {
			t.Fatalf("docs/iot-quickstart.md:%d (terminal %s): not done after 2m:\n%s%s", b.line, q.name, text, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLine polls a terminal until re matches its output, and returns the
// submatches.
func (q *qsTerminal) waitLine(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(time.Minute)
	for {
		if m := rx.FindStringSubmatch(q.out.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("terminal %s: no %s in:\n%s", q.name, re, q.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// buildThrong builds cmd/throng into dir (the CLI the page calls
// `throng`).
func buildThrong(t *testing.T, dir string) {
	t.Helper()
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "throng"), "github.com/throngmq/throng/cmd/throng").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/throng: %v\n%s", err, out)
	}
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(strings.TrimPrefix(addr, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// TestQuickstart runs docs/iot-quickstart.md.
func TestQuickstart(t *testing.T) {
	bash := needClient(t, "bash", "-c", "true")
	needClient(t, "curl", "--version")
	needClient(t, "mosquitto_pub")
	needClient(t, "mosquitto_sub")
	blocks := parseQuickstart(t, quickstartDoc)

	// The platform runs with the administrator's password the page starts
	// throng with, and with the https listener (a self-signed certificate,
	// as `throng serve` without one).
	var adminPW string
	serveRE := regexp.MustCompile(`throng serve .*--admin-password (\S+)`)
	for _, b := range blocks {
		if m := serveRE.FindStringSubmatch(b.text); m != nil {
			adminPW = m[1]
		}
	}
	if adminPW == "" {
		t.Fatal("no `throng serve --admin-password ...` block in the page")
	}
	p := testkit.Start(t, func(c *config.Config) {
		c.AdminPassword = adminPW
		c.Listeners.HTTPS = "127.0.0.1:0"
	})
	dir := t.TempDir()
	bin, home, work := filepath.Join(dir, "bin"), filepath.Join(dir, "home"), filepath.Join(dir, "work")
	for _, d := range []string{bin, home, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	buildThrong(t, bin)
	// A clean environment: no proxy, no ~/.curlrc or ~/.netrc of the
	// user's, throng first on PATH.
	environ := []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "HOME=" + home, "LANG=C.UTF-8"}
	adminPort, amqpPort := portOf(t, p.AdminURL), portOf(t, p.AMQPAddr)
	envRewrite := [][2]string{
		{"localhost", "127.0.0.1"},
		{"REGISTRY_PORT=8161", "REGISTRY_PORT=" + adminPort},
		{"HTTP_ADAPTER_PORT=8443", "HTTP_ADAPTER_PORT=" + portOf(t, p.App.ListenerAddr("https").String())},
		{"MQTT_ADAPTER_PORT=1883", "MQTT_ADAPTER_PORT=" + portOf(t, p.MQTTAddr)},
		{"-P 5672", "-P " + amqpPort},
	}

	terms := map[string]*qsTerminal{}
	term := func(name string) *qsTerminal {
		if terms[name] == nil {
			terms[name] = startTerminal(t, name, bash, work, environ)
		}
		return terms[name]
	}
	vars := map[string]string{}
	idRE := regexp.MustCompile(`\{"id":"([^"]+)"\}`)
	created := func(out, what string) string {
		t.Helper()
		m := idRE.FindAllStringSubmatch(out, -1)
		if !strings.Contains(out, "HTTP/1.1 201 Created") || len(m) != 1 {
			t.Fatalf("%s: no 201 with an id:\n%s", what, out)
		}
		return m[0][1]
	}
	want := func(out, s string) {
		t.Helper()
		if !strings.Contains(out, s) {
			t.Fatalf("no %q in:\n%s", s, out)
		}
	}
	// line is a regexp of a whole output line with the device's and the
	// tenant's ids in place of DEV and TEN.
	line := func(re string) string {
		re = strings.ReplaceAll(re, "DEV", regexp.QuoteMeta(vars["MY_DEVICE"]))
		return `(?m)^` + strings.ReplaceAll(re, "TEN", regexp.QuoteMeta(vars["MY_TENANT"])) + `$`
	}
	steps := map[string]func(out string){
		"hono-env": func(out string) {
			want(out, "export REGISTRY_PORT="+adminPort)
			want(out, "export APP_OPTIONS='--amqp -H 127.0.0.1 -P "+amqpPort)
		},
		"create-tenant": func(out string) {
			vars["MY_TENANT"] = created(out, "tenant")
			if ten, ok := p.Store.Tenant(vars["MY_TENANT"]); !ok || ten.IoT == nil {
				t.Fatalf("tenant %s not stored with its Hono settings", vars["MY_TENANT"])
			}
		},
		"create-device": func(out string) { vars["MY_DEVICE"] = created(out, "device") },
		"set-password":  func(out string) { want(out, "HTTP/1.1 204 No Content") },
		"consume": func(string) {
			term("app").waitLine(t, line(`Consuming messages for tenant \[TEN\], ctrl-c to exit\.`))
		},
		"http-telemetry": func(out string) {
			want(out, "HTTP/1.1 202 Accepted")
			term("app").waitLine(t, line(`t DEV application/json \{"temp": 5\} \{device_id=DEV, orig_adapter=hono-http, orig_address=/telemetry, qos=0, tenant_id=TEN\}`))
		},
		"http-event": func(out string) {
			want(out, "HTTP/1.1 202 Accepted")
			term("app").waitLine(t, line(`e DEV application/json \{"alarm": "fire"\} \{device_id=DEV, orig_adapter=hono-http, orig_address=/event, qos=1, tenant_id=TEN\}`))
		},
		"mqtt-telemetry": func(string) {
			term("app").waitLine(t, line(`t DEV application/octet-stream \{"temp": 5\} \{device_id=DEV, orig_adapter=hono-mqtt, orig_address=telemetry, qos=0, tenant_id=TEN\}`))
		},
		"mqtt-event": func(string) {
			term("app").waitLine(t, line(`e DEV application/octet-stream \{"alarm": "fire"\} \{device_id=DEV, orig_adapter=hono-mqtt, orig_address=event, qos=1, tenant_id=TEN\}`))
		},
		// The device's command subscription is in place once the
		// application has its empty notification.
		"subscribe": func(string) {
			term("app").waitLine(t, line(`e DEV application/vnd\.eclipse-hono-empty-notification - \{device_id=DEV, orig_adapter=hono-mqtt, tenant_id=TEN, ttd=-1\}`))
		},
		"command-shell": func(string) {
			term("command").waitLine(t, line(`Connecting to AMQP 1\.0 based messaging infrastructure \[127\.0\.0\.1:`+amqpPort+`\]`))
		},
		"one-way": func(string) {
			term("device").waitLine(t, line(`command///req//setVolume \{"level": 50\}`))
		},
		"request": func(string) {
			m := term("device").waitLine(t, line(`command///req/([A-Za-z0-9_-]+)/setBrightness \{"level": 87\}`))
			vars["REQ_ID"] = m[1]
		},
		"response": func(string) {
			// A response with a body and no content type gets Hono's default.
			term("command").waitLine(t, line(`res DEV 200 application/octet-stream \{"current-level": 87\}`))
			// mosquitto_sub ended: the device takes no more commands.
			term("app").waitLine(t, line(`e DEV application/vnd\.eclipse-hono-empty-notification - \{device_id=DEV, orig_adapter=hono-mqtt, tenant_id=TEN, ttd=0\}`))
		},
	}

	done := map[string]bool{}
	for _, b := range blocks {
		if b.skip {
			continue
		}
		text := b.text
		if b.env {
			for _, r := range envRewrite {
				if !strings.Contains(text, r[0]) {
					t.Fatalf("docs/iot-quickstart.md:%d: the hono.env block has no %q", b.line, r[0])
				}
				text = strings.ReplaceAll(text, r[0], r[1])
			}
		}
		if b.set != "" {
			v, ok := vars[b.set]
			re := regexp.MustCompile(`\b` + regexp.QuoteMeta(b.set) + `=[^\s"']+`)
			if !ok || len(re.FindAllString(text, -1)) != 1 {
				t.Fatalf("docs/iot-quickstart.md:%d: set=%s: no value found before (%v), or not one %s=... in the block", b.line, b.set, ok, b.set)
			}
			text = re.ReplaceAllLiteralString(text, b.set+"="+v)
		}
		out := term(b.terminal).run(t, b, text)
		if b.step != "" {
			check, ok := steps[b.step]
			if !ok {
				t.Fatalf("docs/iot-quickstart.md:%d: unknown step %q", b.line, b.step)
			}
			check(out)
			done[b.step] = true
		}
	}
	for name := range steps {
		if !done[name] {
			t.Errorf("step %s is not in docs/iot-quickstart.md", name)
		}
	}
	// No client reported a failure on the way.
	for name, q := range terms {
		out := q.out.String()
		for _, bad := range []string{"Error:", "error:", "Cannot send command", "Connection Refused"} {
			if strings.Contains(out, bad) {
				t.Errorf("terminal %s shows %q:\n%s", name, bad, out)
			}
		}
	}
}

// honoGuide holds the commands of Eclipse Hono's getting-started guide
// (eclipse-hono/hono, site/documentation/content/getting-started/
// _index.md, commit 3aeca7ee), verbatim; TestQuickstartMatchesHonoGuide
// finds each in docs/iot-quickstart.md with only the host, the port and
// the program name changed (honoGuideChanges). Left out: the sandbox and
// Kubernetes set-up (hono.env) and the "save the id" lines, whose ids are
// examples.
var honoGuide = []string{
	`# in the folder that contains the hono.env file
source hono.env
curl -i -X POST ${CURL_OPTIONS} -H "content-type: application/json" --data-binary '{
  "ext": {
    "messaging-type": "kafka"
  }
}' https://${REGISTRY_IP}:28443/v1/tenants
`,
	`# in the folder that contains the hono.env file
source hono.env
curl -i -X POST ${CURL_OPTIONS} https://${REGISTRY_IP}:28443/v1/devices/${MY_TENANT}
`,
	`# in directory that contains the hono.env file
echo "export MY_PWD=this-is-my-password" >> hono.env
`,
	`source hono.env
curl -i -X PUT ${CURL_OPTIONS} -H "content-type: application/json" --data-binary '[{
  "type": "hashed-password",
  "auth-id": "'${MY_DEVICE}'",
  "secrets": [{
      "pwd-plain": "'${MY_PWD}'"
  }]
}]' https://${REGISTRY_IP}:28443/v1/credentials/${MY_TENANT}/${MY_DEVICE}
`,
	`# in directory that contains the hono.env file
source hono.env
`,
	`# in directory where the hono-cli-*-exec.jar file has been downloaded to
java -jar hono-cli-*-exec.jar app ${APP_OPTIONS} consume --tenant ${MY_TENANT}
`,
	`curl -i -u ${MY_DEVICE}@${MY_TENANT}:${MY_PWD} ${CURL_OPTIONS} -H 'Content-Type: application/json' --data-binary '{"temp": 5}' https://${HTTP_ADAPTER_IP}:8443/telemetry
`,
	`curl -i -u ${MY_DEVICE}@${MY_TENANT}:${MY_PWD} ${CURL_OPTIONS} -H 'Content-Type: application/json' --data-binary '{"alarm": "fire"}' https://${HTTP_ADAPTER_IP}:8443/event
`,
	`mosquitto_pub -h ${MQTT_ADAPTER_IP} -p 8883 -u ${MY_DEVICE}@${MY_TENANT} -P ${MY_PWD} ${MOSQUITTO_OPTIONS} -t telemetry -m '{"temp": 5}'
`,
	`mosquitto_pub -h ${MQTT_ADAPTER_IP} -p 8883 -u ${MY_DEVICE}@${MY_TENANT} -P ${MY_PWD} ${MOSQUITTO_OPTIONS} -t event -q 1 -m '{"alarm": "fire"}'
`,
	`# in directory that contains the hono.env file
source hono.env
mosquitto_sub -v -h ${MQTT_ADAPTER_IP} -p 8883 -u ${MY_DEVICE}@${MY_TENANT} -P ${MY_PWD} ${MOSQUITTO_OPTIONS} -t command///req/#
`,
	`# in directory where the hono-cli-*-exec.jar file has been downloaded to
java -jar hono-cli-*-exec.jar app ${APP_OPTIONS} command
`,
	`ow --tenant ${MY_TENANT} --device ${MY_DEVICE} -n setVolume --payload '{"level": 50}'
`,
	`req --tenant ${MY_TENANT} --device ${MY_DEVICE} -n setBrightness --payload '{"level": 87}'
`,
	`export REQ_ID=10117f669c12-09ef-416d-88c1-1787f894856d
mosquitto_pub -h ${MQTT_ADAPTER_IP} -p 8883 -u ${MY_DEVICE}@${MY_TENANT} -P ${MY_PWD} ${MOSQUITTO_OPTIONS} -t command///res/${REQ_ID}/200 -m '{"current-level": 87}'
`,
	`req --tenant ${MY_TENANT} --device ${MY_DEVICE} -n setBrightness --payload '{"level": 87}' -r 120
`,
}

// honoGuideChanges are the only changes the quickstart makes to Hono's
// commands.
var honoGuideChanges = strings.NewReplacer(
	"java -jar hono-cli-*-exec.jar app", "throng hono app",
	"https://${REGISTRY_IP}:28443", "http://${REGISTRY_IP}:${REGISTRY_PORT}",
	"https://${HTTP_ADAPTER_IP}:8443", "https://${HTTP_ADAPTER_IP}:${HTTP_ADAPTER_PORT}",
	"-p 8883", "-p ${MQTT_ADAPTER_PORT}",
)

// commandLines is a block without its comment and blank lines.
func commandLines(block string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(block))
	for sc.Scan() {
		if l := sc.Text(); strings.TrimSpace(l) != "" && !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func TestQuickstartMatchesHonoGuide(t *testing.T) {
	blocks := parseQuickstart(t, quickstartDoc)
	for _, h := range honoGuide {
		want := commandLines(honoGuideChanges.Replace(h))
		found := false
		for _, b := range blocks {
			if commandLines(b.text) == want {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("Hono's\n%s\nis not in docs/iot-quickstart.md as\n%s", h, want)
		}
	}
}
