package main

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/throngmq/throng/internal/admin"
)

// ---- anomalies (docs/anomalies.md): the anomaly finder's report — error
// makers, silent devices, growing backlogs and the top talkers — of the
// whole cluster, as the console's Anomalies view shows it. With --tenant
// the tenant's path is used (its administrators and operators); without,
// the platform administrator's /api/anomalies.
func (c *cli) anomalies(ctx context.Context, args []string) error {
	fs := c.newFlagSet("anomalies", "anomalies [--tenant T] [--top N]")
	cl := c.clientFlags(fs, "password")
	ten := fs.String("tenant", "", "the tenant's report (its administrators and operators); empty: every tenant's (platform administrator)")
	top := fs.Int("top", 0, "top talkers to list (0: the node's default)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if err := cl.check(); err != nil {
		return err
	}
	path := "/api/anomalies"
	if *ten != "" {
		path = "/api/tenants/" + seg(*ten) + "/anomalies"
	}
	if *top > 0 {
		path += "?" + url.Values{"topN": {strconv.Itoa(*top)}}.Encode()
	}
	var r admin.AnomalyReport
	raw, err := cl.call(ctx, "GET", path, nil, &r)
	if err != nil || c.printedJSON(cl, raw) {
		return err
	}
	rows := make([][]string, 0, len(r.Findings))
	for _, f := range r.Findings {
		who := f.ClientID
		for _, w := range []struct{ what, v string }{{"device ", f.Device}, {"", f.Address}, {"user ", f.User}, {"source ", f.Source}} {
			if who == "" && w.v != "" {
				who = w.what + w.v
			}
		}
		rows = append(rows, []string{f.Kind, f.Tenant, orDash(who), f.Summary})
	}
	if len(rows) == 0 {
		fmt.Fprintln(c.stdout, "no findings")
	} else {
		table(c.stdout, "KIND\tTENANT\tWHO\tSUMMARY", rows)
	}
	rows = rows[:0]
	for _, t := range r.TopTalkers {
		who := t.User
		if t.Device != "" {
			who = "device " + t.Device
		}
		rows = append(rows, []string{t.Tenant, t.Connection, t.Protocol, orDash(t.ClientID), orDash(who),
			rate(t.MessagesPerSecond), strconv.FormatFloat(100*t.Share, 'f', 1, 64) + "%"})
	}
	fmt.Fprintln(c.stdout)
	if len(rows) == 0 {
		fmt.Fprintln(c.stdout, "no talkers")
	} else {
		table(c.stdout, "TENANT\tCONNECTION\tPROTOCOL\tCLIENT\tWHO\tMSG/S\tSHARE", rows)
	}
	if len(r.Missing) > 0 {
		// A cluster's nodes that did not answer: what only they saw is
		// not in the report.
		fmt.Fprintf(c.stdout, "not answering (what only they saw is missing): %s\n", strings.Join(r.Missing, ", "))
	}
	return nil
}
