package config

import "time"

// DefaultHeaderAllow is the default list of headers that may cross from
// one leg to the other; everything else is dropped (topology hiding).
var DefaultHeaderAllow = []string{
	"Accept", "Accept-Encoding", "Accept-Language", "Allow", "Content-Disposition",
	"Content-Encoding", "Content-Language", "Content-Type", "Event", "Min-SE",
	"P-Asserted-Identity", "Privacy", "Reason", "Refer-To", "Referred-By",
	"Remote-Party-ID", "Require", "RSeq", "RAck", "Session-Expires",
	"Subscription-State", "Supported", "Unsupported",
}

// Default returns the configuration used for keys the file leaves out.
func Default() Config {
	return Config{
		Log:           Log{Level: "info", Format: "json"},
		Admin:         Admin{Listen: "127.0.0.1:9090"},
		ShutdownGrace: 30 * time.Second,
		LAN: LAN{
			Listen: []string{"udp://0.0.0.0:5060", "tcp://0.0.0.0:5060"},
		},
		WAN: WAN{
			Listen: []string{"tls://0.0.0.0:5061"},
			TLS:    WANTLS{MinVersion: "1.2"},
		},
		DNS:       DNS{Timeout: 2 * time.Second, Stale: time.Hour},
		Numbering: Numbering{CountryCode: "1", NationalPrefix: "1", InternationalPrefix: "011"},
		Routes: Routes{
			Emergency:           []string{"911", "112", "999", "933"},
			Special:             []string{"411", "611", "711", "811", "988"},
			InboundCallerFormat: "e164",
		},
		Headers: Headers{Allow: append([]string(nil), DefaultHeaderAllow...)},
		Calls:   Calls{SessionExpires: 1800 * time.Second, MinSE: 90 * time.Second},
		Security: Security{
			RateLimit:       RateLimit{PerIP: 30, Burst: 60, Ban: 10 * time.Minute},
			UserAgentDeny:   []string{"friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent"},
			MaxMessageBytes: 65535,
			Methods: Methods{
				WAN: []string{"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "PRACK", "NOTIFY"},
				LAN: []string{"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "PRACK", "NOTIFY", "REFER"},
			},
			ServerHeader: "esbc",
			Limits:       Limits{MaxHeaders: 100, MaxLineBytes: 8192},
			AuthFailures: AuthFailures{Max: 10, Window: 60 * time.Second},
		},
		Media: Media{
			RTPPorts:          "20000-29999",
			DSCP:              DSCP{RTP: 46, SIP: 24},
			InactivityTimeout: 60 * time.Second,
			Quarantine:        2 * time.Second,
			LatchWindow:       5 * time.Second,
			Transcode:         true,
		},
		CDR:     CDR{File: "/var/log/esbc/cdr.jsonl"},
		Capture: Capture{Mode: "off", MaxFileBytes: 100000000, MaxFiles: 10},
	}
}

// DefaultTrunk returns the defaults applied to every entry of trunks[].
func DefaultTrunk() Trunk {
	return Trunk{
		Transport:        "tls",
		Auth:             Auth{Method: "digest", RegisterExpires: 600 * time.Second},
		Refer:            "reject",
		Channels:         300,
		SRTP:             "mandatory",
		Codecs:           []string{"PCMU", "PCMA", "G729", "telephone-event"},
		PRACK:            true,
		OptionsInterval:  30 * time.Second,
		FailoverTimeout:  2 * time.Second,
		FailbackHolddown: 30 * time.Second,
	}
}
