package route

import "testing"

func BenchmarkOutbound(b *testing.B) {
	tb := mustCompile(b, nanpConfig(true))
	for _, s := range []string{"94155550100", "9911", "sip:+14155550100@pbx;user=phone"} {
		b.Run(s, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tb.Outbound(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
