package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
)

// cmdAudit is `braid audit --config F --view V [--from T] [--to T]`: the
// speed layer's windows recomputed exactly from the lake, with each
// measure's drift against its bound. Exits non-zero when a window is out
// of bounds.
func cmdAudit(ctx context.Context, args []string) error {
	var view, from, to string
	var asJSON bool
	var wait time.Duration
	a, _, err := layerFlags("audit", args, func(fs *flag.FlagSet) {
		fs.StringVar(&view, "view", "", "view to audit")
		fs.StringVar(&from, "from", "", "first window start (RFC 3339; default: every window the speed layer holds)")
		fs.StringVar(&to, "to", "", "end of the window starts, exclusive (RFC 3339)")
		fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
		fs.DurationVar(&wait, "wait", 30*time.Second, "how long to wait for the archiver to reach the speed position")
	})
	if err != nil {
		return err
	}
	defer a.Close()
	v, ok := a.cat.Views[view]
	if !ok {
		return fmt.Errorf("unknown view %q", view)
	}
	if v.Tier != logic.TierLive {
		return fmt.Errorf("view %q is batch-tier: it keeps no speed state to audit (its answers come from the batch layer alone)", view)
	}
	fromMs, toMs := int64(math.MinInt64), int64(math.MaxInt64)
	for _, f := range []struct {
		s   string
		dst *int64
	}{{from, &fromMs}, {to, &toMs}} {
		if f.s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, f.s)
		if err != nil {
			return fmt.Errorf("--from/--to: %w", err)
		}
		*f.dst = t.UnixMilli()
	}
	if err := a.connectRedis(ctx, false); err != nil {
		return err
	}
	l, err := a.openStores()
	if err != nil {
		return err
	}
	au := auditor{lake: l.lake, store: l.store, views: l.views, wait: wait}
	if a.cfg.NATS.URL != "" {
		a.natsWait = -1 // a one-off command: NATS answers now, or it fails
		if err := a.connectNATS(ctx, false); err != nil {
			return err
		}
		au.log = a.log
	} else {
		fmt.Fprintln(os.Stderr, "nats.url is not set: too-late events are not known and show as drift")
	}
	rep, err := au.report(ctx, v, fromMs, toMs)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printAudit(rep)
	}
	if !rep.OK {
		return errors.New("drift beyond the bounds (see above)")
	}
	return nil
}

func printAudit(rep *batch.AuditReport) {
	cut := "none"
	if rep.Cutoff > 0 {
		cut = logic.FormatTime(rep.Cutoff)
	}
	fmt.Printf("audit of %s: speed layer up to log record %d, batch cutoff %s, %d lake events recomputed\n", rep.View, rep.Seq, cut, rep.Events)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	var head []string
	if len(rep.Windows) > 0 {
		for _, m := range rep.Windows[0].Measures {
			head = append(head, m.Name+" ("+m.Kind+")")
		}
	}
	fmt.Fprintf(tw, "window\tgroups\t%s\tstatus\n", strings.Join(head, "\t"))
	for _, w := range rep.Windows {
		cols := make([]string, len(w.Measures))
		for i, m := range w.Measures {
			mark := ""
			if !m.OK {
				mark = " !"
			}
			switch {
			case m.Kind == "quantile":
				cols[i] = fmt.Sprintf("%.3g%% ≤ %.3g%%%s", 100*m.Drift, 100*m.Bound, mark)
			case m.Drift == 0:
				cols[i] = "0" + mark
			default:
				cols[i] = fmt.Sprintf("%.4g ≤ %.4g%s", m.Drift, m.Bound, mark)
			}
		}
		status := "ok"
		if !w.OK {
			status = "DRIFT"
			if len(w.Missing) > 0 {
				status += " (" + strings.Join(w.Missing, "; ") + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", logic.FormatTime(w.Window), w.Groups, strings.Join(cols, "\t"), status)
	}
	tw.Flush()
	bad := 0
	for _, w := range rep.Windows {
		if !w.OK {
			bad++
		}
	}
	fmt.Printf("%d windows, %d beyond their bounds\n", len(rep.Windows), bad)
}
