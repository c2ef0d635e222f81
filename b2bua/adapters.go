package b2bua

import (
	"github.com/esbc/esbc/b2bua/cdr"
	"github.com/esbc/esbc/b2bua/route"
)

// RouteTable adapts a compiled dial plan to Router.
func RouteTable(t *route.Table) Router { return routeTable{t} }

type routeTable struct{ t *route.Table }

func (r routeTable) Outbound(dialled string) (Route, error) {
	d, err := r.t.Outbound(dialled)
	if err != nil {
		return Route{}, err
	}
	return Route{Trunk: d.Trunk, Number: d.Number, Emergency: d.Emergency || d.Special}, nil
}

func (r routeTable) Inbound(user string) (string, error) { return r.t.Inbound(user) }

// CDRRecord turns an ended call into its CDR.
func CDRRecord(ci CallInfo) cdr.Record {
	r := cdr.Record{
		CallID: ci.ID, Direction: ci.Direction, Trunk: ci.Trunk, From: ci.From, To: ci.To,
		Start: ci.Start, Answer: ci.Answer, End: ci.End, Disposition: ci.Disposition, SIPCode: ci.Code,
	}
	if !ci.Answer.IsZero() {
		r.DurationSec = ci.End.Sub(ci.Answer).Seconds()
	}
	for _, l := range ci.Legs {
		var leg cdr.Leg
		if l.Media != nil {
			leg = cdr.Leg{Codec: l.Media.Codec, SRTPSuite: l.Media.Suite, Packets: l.Media.PacketsIn,
				JitterMs: l.Media.JitterMs, RTTMs: l.Media.RTTMs, Remote: l.MediaRemote}
			if l.Media.Lost > 0 {
				leg.Lost = uint64(l.Media.Lost)
			}
		}
		if l.Side == "lan" {
			r.LAN = leg
		} else {
			r.WAN = leg
			r.SRTPSuite = leg.SRTPSuite
		}
		if r.Codec == "" {
			r.Codec = leg.Codec
		}
	}
	return r
}
