package route

import (
	"errors"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var nanp = Numbering{CountryCode: "1", NationalPrefix: "1", InternationalPrefix: "011"}
var uk = Numbering{CountryCode: "44", NationalPrefix: "0", InternationalPrefix: "00"}

// internetOnly has no emergency-capable trunk: every emergency and special
// number must fail with ErrEmergencyBlocked.
func nanpConfig(withGateway bool) Config {
	cfg := Config{
		Numbering: nanp,
		Emergency: []string{"911", "112", "933"},
		Special:   []string{"211", "311", "411", "511", "611", "711", "811"},
		Outbound: []Outbound{
			{Match: `^9(\d+)$`, Number: "$1", Trunk: "skype"},
			{Match: `^\+(\d+)$`, Number: "+$1", Trunk: "skype"},
			{Match: `^(1?\d{10})$`, Trunk: "skype"},
		},
		Trunks: []Trunk{{Name: "skype"}, {Name: "pstn", Emergency: true}},
	}
	if withGateway {
		cfg.Outbound = append(cfg.Outbound,
			Outbound{Match: `^8(\d+)$`, Number: "$1", Trunk: "pstn"},
			Outbound{Match: `^9(\d+)$`, Number: "$1", Trunk: "pstn"},
		)
	}
	return cfg
}

func ukConfig(withGateway bool) Config {
	cfg := Config{
		Numbering: uk,
		Emergency: []string{"999", "112"},
		Special:   []string{"101", "111", "118118"},
		Outbound: []Outbound{
			{Match: `^9(\d+)$`, Number: "$1", Trunk: "skype"},
			{Match: `^(\+\d+)$`, Number: "$1", Trunk: "skype"},
			{Match: `^(0\d+)$`, Trunk: "skype"},
		},
		Trunks: []Trunk{{Name: "skype"}, {Name: "gw", Emergency: true}},
	}
	if withGateway {
		cfg.Outbound = append(cfg.Outbound, Outbound{Match: `^(999|112)$`, Trunk: "gw"})
	}
	return cfg
}

func mustCompile(t testing.TB, cfg Config) *Table {
	t.Helper()
	tb, err := Compile(cfg)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tb
}

func TestOutboundNumbers(t *testing.T) {
	us := mustCompile(t, nanpConfig(false))
	gb := mustCompile(t, ukConfig(false))
	tests := []struct {
		name    string
		table   *Table
		dialled string
		want    string
		route   int
		err     error
	}{
		{"nanp access code 10 digits", us, "94155550100", "+14155550100", 0, nil},
		{"nanp access code 1+10", us, "914155550100", "+14155550100", 0, nil},
		{"nanp access code separators", us, "9 (415) 555-0100", "+14155550100", 0, nil},
		{"nanp access code dots", us, "9.1.415.555.0100", "+14155550100", 0, nil},
		{"nanp access code international", us, "9 011 44 20 7946 0000", "+442079460000", 0, nil},
		{"nanp plus", us, "+1 415 555 0100", "+14155550100", 1, nil},
		{"nanp plus dashes", us, "+1-415-555-0100", "+14155550100", 1, nil},
		{"nanp plus foreign", us, "+44 20 7946 0000", "+442079460000", 1, nil},
		{"nanp national parens", us, "(415) 555-0100", "+14155550100", 2, nil},
		{"nanp national with prefix", us, "1-415-555-0100", "+14155550100", 2, nil},
		{"nanp tel uri", us, "tel:+1-415-555-0100;phone-context=example.com", "+14155550100", 1, nil},
		{"nanp tel uri national", us, "tel:4155550100;phone-context=+1", "+14155550100", 2, nil},
		{"nanp sip uri", us, "sip:94155550100@10.0.0.2;user=phone", "+14155550100", 0, nil},
		{"nanp sips uri with brackets", us, "<sips:+14155550100@pbx.example.com>", "+14155550100", 1, nil},
		{"nanp percent escaped plus", us, "sip:%2B14155550100@pbx", "+14155550100", 1, nil},
		{"nanp full-width digits", us, "９４１５５５５０１００", "+14155550100", 0, nil},
		{"nanp toll free", us, "918005550100", "+18005550100", 0, nil},
		{"nanp invalid area code", us, "+1 123 456 7890", "", 1, ErrInvalidNumber},
		{"nanp too short", us, "9555", "", 0, ErrInvalidNumber},
		{"nanp seven digits not guessed", us, "95550100", "", 0, ErrInvalidNumber},
		{"nanp letters", us, "9415FLOWERS", "", 0, ErrInvalidNumber},
		{"nanp empty", us, "", "", 0, ErrInvalidNumber},
		{"nanp plus only", us, "+", "", 0, ErrInvalidNumber},
		{"nanp plus inside", us, "94+15550100", "", 0, ErrInvalidNumber},
		{"nanp star code", us, "9*4155550100", "", 0, ErrNoRoute},
		{"nanp too long", us, "9" + strings.Repeat("1", 40), "", 0, ErrInvalidNumber},
		{"nanp bad escape", us, "sip:%zz@pbx", "", 0, ErrInvalidNumber},
		{"nanp host only uri", us, "sip:pbx.example.com", "", 0, ErrInvalidNumber},
		{"nanp no route", us, "5000", "", 0, ErrNoRoute},
		{"uk access code national", gb, "9 020 7946 0000", "+442079460000", 0, nil},
		{"uk access code international", gb, "9 00 1 415 555 0100", "+14155550100", 0, nil},
		{"uk national", gb, "020 7946 0000", "+442079460000", 2, nil},
		{"uk national dashes", gb, "0113-496-0000", "+441134960000", 2, nil},
		{"uk plus", gb, "+44 20 7946 0000", "+442079460000", 1, nil},
		{"uk plus with (0)", gb, "+44 (0)20 7946 0000", "+442079460000", 1, nil},
		{"uk tel", gb, "tel:+44-20-7946-0000", "+442079460000", 1, nil},
		{"uk invalid", gb, "020 7946", "", 2, ErrInvalidNumber},
		{"uk no route", gb, "2000", "", 0, ErrNoRoute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := tc.table.Outbound(tc.dialled)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Outbound(%q) = %+v, %v; want %v", tc.dialled, d, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Outbound(%q): %v", tc.dialled, err)
			}
			want := Decision{Trunk: "skype", Number: tc.want, Route: tc.route}
			if d != want {
				t.Fatalf("Outbound(%q) = %+v; want %+v", tc.dialled, d, want)
			}
		})
	}
}

// TestEmergencyBypass dials emergency and special numbers in every form we
// could think of. Without an emergency-capable trunk each must fail with
// ErrEmergencyBlocked; with one it must go there, flagged, as the short code.
func TestEmergencyBypass(t *testing.T) {
	type bypass struct {
		dialled   string
		code      string
		emergency bool
	}
	nanpForms := []bypass{
		{"911", "911", true}, {"9911", "911", true}, {"9-911", "911", true},
		{"9 1 1", "911", true}, {"99 1 1", "911", true}, {"9.1.1", "911", true},
		{"(911)", "911", true}, {"1911", "911", true}, {"1-911", "911", true},
		{"91911", "911", true}, {"9 1-911", "911", true}, {"+1911", "911", true},
		{"+1 911", "911", true}, {"+1 (911)", "911", true}, {"+911", "911", true},
		{"011 1 911", "911", true}, {"011-1-911", "911", true}, {"9011 1 911", "911", true},
		{"tel:911", "911", true}, {"tel:+1-911", "911", true}, {"tel:911;phone-context=+1", "911", true},
		{"sip:911@pbx.local", "911", true}, {"sip:9911@10.0.0.2;user=phone", "911", true},
		{"<sips:911@pbx>", "911", true}, {"sip:%39%31%31@pbx", "911", true},
		{"sip:%2B1911@pbx", "911", true}, {"911#", "911", true}, {"9911#", "911", true},
		{"*67911", "911", true}, {"*67 911", "911", true},
		{"*82 1 911", "911", true}, {"#31#911", "911", true}, {"*31#911", "911", true},
		{"９１１", "911", true}, {"９ ９１１", "911", true},
		{"112", "112", true}, {"9112", "112", true}, {"+1 112", "112", true},
		{"933", "933", true}, {"9933", "933", true}, {"1-933", "933", true},
		{"urn:service:sos", "911", true}, {"urn:service:sos.police", "911", true},
		{"<urn:service:sos>", "911", true},
		{"411", "411", false}, {"9411", "411", false}, {"1-411", "411", false},
		{"+1 411", "411", false}, {"011 1 411", "411", false}, {"tel:611", "611", false},
		{"9 8 1 1", "811", false}, {"*67 211", "211", false},
	}
	ukForms := []bypass{
		{"999", "999", true}, {"9999", "999", true}, {"9 999", "999", true},
		{"0999", "999", true}, {"9 0999", "999", true}, {"+44999", "999", true},
		{"+44 999", "999", true}, {"+44 (0) 999", "999", true}, {"0044999", "999", true},
		{"00 44 999", "999", true}, {"9 00 44 999", "999", true}, {"44999", "999", true},
		{"tel:+44-999", "999", true}, {"sip:999@pbx", "999", true}, {"999#", "999", true},
		{"9-9-9", "999", true}, {"#31#999", "999", true},
		{"112", "112", true}, {"9112", "112", true}, {"+44112", "112", true}, {"00 44 112", "112", true},
		{"urn:service:sos", "999", true},
		{"111", "111", false}, {"9111", "111", false}, {"+44 111", "111", false},
		{"118 118", "118118", false}, {"9 118118", "118118", false}, {"00 44 118 118", "118118", false},
	}
	run := func(t *testing.T, cfg Config, gateway string, forms []bypass) {
		blocked := mustCompile(t, cfg)
		for _, b := range forms {
			d, err := blocked.Outbound(b.dialled)
			if !errors.Is(err, ErrEmergencyBlocked) {
				t.Errorf("no gateway: Outbound(%q) = %+v, %v; want ErrEmergencyBlocked", b.dialled, d, err)
			}
		}
		cfg.Trunks[0].Emergency = false
		routed := mustCompile(t, withGateway(cfg))
		for _, b := range forms {
			d, err := routed.Outbound(b.dialled)
			if err != nil {
				t.Errorf("gateway: Outbound(%q): %v", b.dialled, err)
				continue
			}
			if d.Trunk != gateway || d.Number != b.code || d.Emergency != b.emergency || d.Special == b.emergency {
				t.Errorf("gateway: Outbound(%q) = %+v; want trunk %s number %s emergency %v", b.dialled, d, gateway, b.code, b.emergency)
			}
		}
	}
	t.Run("nanp", func(t *testing.T) { run(t, nanpConfig(false), "pstn", nanpForms) })
	// Forms no route understands: they must not reach the internet trunk,
	// whatever error they get.
	for _, cfg := range []Config{nanpConfig(false), nanpConfig(true), ukConfig(false), ukConfig(true)} {
		tb := mustCompile(t, cfg)
		for _, dialled := range []string{"9*67911", "9 *82 911#", "9#31#911", "*9911", "9 911 *", "99#9", "sip:9*67911@pbx"} {
			if d, err := tb.Outbound(dialled); err == nil && !d.Emergency {
				t.Errorf("Outbound(%q) = %+v: an emergency dial string routed as ordinary", dialled, d)
			}
		}
	}
	t.Run("uk", func(t *testing.T) { run(t, ukConfig(false), "gw", ukForms) })
}

func withGateway(cfg Config) Config {
	if cfg.Numbering.CountryCode == "1" {
		return nanpConfig(true)
	}
	return ukConfig(true)
}

// TestEmergencyRoutePreference: the first route to an emergency-capable
// trunk whose Match matches wins; without a matching one the first
// emergency-capable route is taken anyway.
func TestEmergencyRoutePreference(t *testing.T) {
	cfg := Config{
		Numbering: nanp,
		Emergency: []string{"911"},
		Outbound: []Outbound{
			{Match: `^9(\d+)$`, Number: "$1", Trunk: "skype"},
			{Match: `^7(\d+)$`, Number: "$1", Trunk: "gw1"},
			{Match: `^9(\d+)$`, Number: "$1", Trunk: "gw2"},
		},
		Trunks: []Trunk{{Name: "skype"}, {Name: "gw1", Emergency: true}, {Name: "gw2", Emergency: true}},
	}
	tb := mustCompile(t, cfg)
	for _, tc := range []struct{ dialled, trunk string }{
		{"9911", "gw2"}, {"7911", "gw1"}, {"911", "gw2"}, {"1911", "gw1"},
	} {
		d, err := tb.Outbound(tc.dialled)
		if err != nil || d.Trunk != tc.trunk || !d.Emergency || d.Number != "911" {
			t.Errorf("Outbound(%q) = %+v, %v; want trunk %s", tc.dialled, d, err, tc.trunk)
		}
	}
	// An ordinary number still takes the first matching route.
	d, err := tb.Outbound("94155550100")
	if err != nil || d.Trunk != "skype" || d.Emergency {
		t.Errorf("ordinary number: %+v, %v", d, err)
	}
}

// TestEmergencyLibraryData: 112 is an emergency number in the US and the UK
// even when the admin forgot it in routes.emergency.
func TestEmergencyLibraryData(t *testing.T) {
	cfg := nanpConfig(false)
	cfg.Emergency = []string{"911"}
	tb := mustCompile(t, cfg)
	if _, err := tb.Outbound("9112"); !errors.Is(err, ErrEmergencyBlocked) {
		t.Errorf("9112: %v; want ErrEmergencyBlocked", err)
	}
	cfg = ukConfig(false)
	cfg.Emergency = nil
	tb = mustCompile(t, cfg)
	for _, n := range []string{"999", "+44999", "112"} {
		if _, err := tb.Outbound(n); !errors.Is(err, ErrEmergencyBlocked) {
			t.Errorf("%s: %v; want ErrEmergencyBlocked", n, err)
		}
	}
}

func TestInbound(t *testing.T) {
	tb := mustCompile(t, Config{
		Numbering: nanp,
		Inbound: []Inbound{
			{Match: `^\+14155550100$`, Extension: "200"},
			{Match: `^\+1415555(01\d\d)$`, Extension: "$1"},
			{Match: `^tag_(?P<ext>\d+)$`, Extension: "${ext}"},
			{Match: `^echo_(.*)$`, Extension: "$1"},
			{Match: `^\+1`, Extension: "100"},
		},
	})
	tests := []struct {
		ruri, want string
		err        error
	}{
		{"+14155550100", "200", nil},
		{"sip:+14155550100@203.0.113.5;user=phone", "200", nil},
		{"sips:+14155550100@esbc.example.com:5061;transport=tls", "200", nil},
		{"tel:+14155550100", "200", nil},
		{"+1 (415) 555-0100", "200", nil},
		{"sip:%2B14155550100@esbc", "200", nil},
		{"+14155550150", "0150", nil},
		{"tag_301", "301", nil},
		{"+12125551234", "100", nil},
		{"echo_a b", "", ErrInvalidNumber},
		{"echo_x\ty", "", ErrInvalidNumber},
		{"echo_x\r\nVia: evil", "", ErrNoRoute}, // . does not match \n
		{"echo_", "", ErrInvalidNumber},
		{"99051000012345", "", ErrNoRoute},
		{"alice.smith", "", ErrNoRoute},
		{"sip:%zz@esbc", "", ErrInvalidNumber},
		{"\xff", "", ErrInvalidNumber},
	}
	for _, tc := range tests {
		got, err := tb.Inbound(tc.ruri)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("Inbound(%q) = %q, %v; want %v", tc.ruri, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Inbound(%q) = %q, %v; want %q", tc.ruri, got, err, tc.want)
		}
	}
}

func TestE164(t *testing.T) {
	us := mustCompile(t, Config{Numbering: nanp})
	gb := mustCompile(t, Config{Numbering: uk})
	tests := []struct {
		table *Table
		in    string
		want  string
	}{
		{us, "+14155550100", "+14155550100"},
		{us, "4155550100", "+14155550100"},
		{us, "14155550100", "+14155550100"},
		{us, "(415) 555-0100", "+14155550100"},
		{us, "011 44 20 7946 0000", "+442079460000"},
		{us, "sip:4155550100@pbx", "+14155550100"},
		{us, "tel:+1.415.555.0100", "+14155550100"},
		{us, "5550100", ""},
		{us, "anonymous", ""},
		{us, "+1911", ""},
		{us, "200", ""},
		{gb, "02079460000", "+442079460000"},
		{gb, "2079460000", "+442079460000"},
		{gb, "00 1 415 555 0100", "+14155550100"},
		{gb, "+44 20 7946 0000", "+442079460000"},
		{gb, "442079460000", ""}, // E.164 without '+': not guessed
		{gb, "+44999", ""},
	}
	for _, tc := range tests {
		got, err := tc.table.E164(tc.in)
		if tc.want == "" {
			if !errors.Is(err, ErrInvalidNumber) {
				t.Errorf("E164(%q) = %q, %v; want ErrInvalidNumber", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("E164(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestCallerForPBX(t *testing.T) {
	usE := mustCompile(t, Config{Numbering: nanp})
	usN := mustCompile(t, Config{Numbering: nanp, InboundCallerFormat: "national"})
	gbN := mustCompile(t, Config{Numbering: uk, InboundCallerFormat: "national"})
	noIntl := mustCompile(t, Config{Numbering: Numbering{CountryCode: "44", NationalPrefix: "0"}, InboundCallerFormat: "national"})
	tests := []struct {
		table    *Table
		in, want string
	}{
		{usE, "+14155550100", "+14155550100"},
		{usE, "4155550100", "+14155550100"},
		{usE, "anonymous", "anonymous"},
		{usN, "+14155550100", "4155550100"},
		{usN, "+442079460000", "011442079460000"},
		{usN, "alice.smith", "alice.smith"},
		{gbN, "+442079460000", "02079460000"},
		{gbN, "+14155550100", "0014155550100"},
		{noIntl, "+14155550100", "+14155550100"},
	}
	for _, tc := range tests {
		if got := tc.table.CallerForPBX(tc.in); got != tc.want {
			t.Errorf("CallerForPBX(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	cfg := Config{
		Numbering:           Numbering{CountryCode: "+1", NationalPrefix: "x", InternationalPrefix: "0 11"},
		Emergency:           []string{"911", "9-1-1"},
		Special:             []string{"4a1"},
		Outbound:            []Outbound{{Match: "(", Trunk: "nope"}, {Match: "", Number: "a b", Trunk: "skype"}},
		Inbound:             []Inbound{{Match: "[", Extension: ""}, {Match: ".*", Extension: "<x>"}},
		Trunks:              []Trunk{{Name: "skype"}, {Name: "skype"}, {Name: ""}},
		InboundCallerFormat: "local",
	}
	_, err := Compile(cfg)
	if err == nil {
		t.Fatal("Compile accepted a bad config")
	}
	for _, key := range []string{
		"numbering.country_code", "numbering.national_prefix", "numbering.international_prefix",
		"routes.emergency[1]", "routes.special[0]", "routes.outbound[0].match", "routes.outbound[0].trunk",
		"routes.outbound[1].match", "routes.outbound[1].number", "routes.inbound[0].match",
		"routes.inbound[0].extension", "routes.inbound[1].extension", "trunks[1].name", "trunks[2].name",
		"routes.inbound_caller_format",
	} {
		if !strings.Contains(err.Error(), key+":") {
			t.Errorf("error does not name %s:\n%v", key, err)
		}
	}
	for _, cc := range []string{"", "999", "0044", "12345"} {
		if _, err := Compile(Config{Numbering: Numbering{CountryCode: cc}}); err == nil {
			t.Errorf("country code %q accepted", cc)
		}
	}
	if _, err := Compile(Config{Numbering: Numbering{CountryCode: "44", NationalPrefix: "0", InternationalPrefix: "0"}}); err == nil {
		t.Error("international prefix equal to national prefix accepted")
	}
}

// TestConcurrentUse runs the table from several goroutines under -race.
func TestConcurrentUse(t *testing.T) {
	tb := mustCompile(t, nanpConfig(true))
	done := make(chan error)
	for g := 0; g < 4; g++ {
		go func() {
			var err error
			for i := 0; i < 200 && err == nil; i++ {
				var d Decision
				if d, err = tb.Outbound("94155550100"); err == nil && d.Number != "+14155550100" {
					err = errors.New("wrong number " + d.Number)
				}
				if _, e := tb.Outbound("9911"); e != nil {
					err = e
				}
			}
			done <- err
		}()
	}
	for g := 0; g < 4; g++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
