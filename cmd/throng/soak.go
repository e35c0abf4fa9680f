package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/soak"
)

const soakSynopsis = `soak [--duration 1h] [--interval 60s] [--rate 200] [--storm 15000] [--faults a,b] [--nodes 3] [--only stream,…] [--work-dir D] [--keep] [--seed N]

Runs the crash, fault and soak checker (docs/reliability.md): starts this
binary as a 'throng serve' child on free loopback ports and a temporary
data directory, drives MQTT 3.1.1/5 and AMQP clients against it, injects
faults at intervals (` + "kill9, stopcont, slow, kill9-startup, stuck, kill9-purge, storm, diskfull, clockjump" + `)
and prints progress lines and a final table. Exits non-zero when an
acknowledged message was lost, order was broken where promised, a
message was delivered that was never sent, or an MQTT QoS 2 message was
delivered again under a new packet id; the rest (duplicates, stalls,
faults that did not go as intended) is listed under Findings`

func (c *cli) soak(ctx context.Context, args []string) error {
	fs := c.newFlagSet("soak", soakSynopsis)
	duration := fs.Duration("duration", time.Hour, "how long to run (load, faults and checks)")
	interval := fs.Duration("interval", time.Minute, "one cycle: load with a fault in its middle, then a check")
	cycles := fs.Int("cycles", 0, "run exactly this many cycles instead of --duration")
	rate := fs.Float64("rate", 200, "messages per second per producer")
	storm := fs.Int("storm", 15000, "clients in a reconnect storm")
	faults := fs.String("faults", "", "comma-separated faults to rotate through (default: all)")
	workDir := fs.String("work-dir", "", "directory for the data directories and the node log (default: a temporary one)")
	keep := fs.Bool("keep", false, "keep the work directory (always kept when --work-dir is given)")
	seed := fs.Uint64("seed", 0, "random seed (default: from the clock)")
	bin := fs.String("bin", "", "throng binary to run as the node (default: this one)")
	catchUp := fs.Duration("catch-up", 30*time.Second, "a check ends when nothing was delivered for this long")
	only := fs.String("only", "", "comma-separated streams the slow and stuck faults choose from (default: all)")
	nodes := fs.Int("nodes", 1, "run a cluster of this many nodes, clients spread over them (faults: "+strings.Join(soak.ClusterFaults, ", ")+"; default "+strings.Join(soak.DefaultClusterFaults, ",")+")")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	cfg := soak.Config{Duration: *duration, Interval: *interval, Cycles: *cycles, Rate: *rate, Storm: *storm,
		Bin: *bin, WorkDir: *workDir, Keep: *keep || *workDir != "", Seed: *seed, Out: c.stdout, CatchUp: *catchUp,
		RequireDiskFull: c.env.get("CI") == "true", Nodes: *nodes}
	if *faults != "" {
		cfg.Faults = strings.Split(*faults, ",")
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	if cfg.Bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		cfg.Bin = exe
	}
	r, err := soak.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if why := r.Failed(); len(why) > 0 {
		return fmt.Errorf("soak failed: %s", strings.Join(why, "; "))
	}
	return nil
}
