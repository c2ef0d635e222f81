// Package capture writes diagnostic .pcapng files of what esbc saw: SIP
// after TLS decryption and RTP after SRTP decryption, in synthesised
// Ethernet/IP/UDP frames (gopacket layers + pcapgo, pure Go; never
// gopacket/pcap, which needs cgo), so Wireshark shows the call ladder and
// plays the audio through TLS and SRTP.
//
// Modes (capture.mode): off; sip (SIP of all calls, one rotating file, for
// long runs); call (SIP and RTP, one file per call); all (SIP and RTP of all
// calls, one rotating file). Files rotate at max_file_bytes; at most
// max_files are kept (the oldest this process wrote is deleted).
//
// Imports: gopacket (layers, pcapgo), prometheus, zap. No esbc package.
//
// Concurrency: WriteSIP, WriteRTP and EndCall never block and are safe for
// concurrent use (a bounded queue to one writer goroutine; packets beyond
// it are dropped and counted in esbc_capture_dropped_total). The writer
// goroutine is started by New and stopped by Close, which drains the queue.
// A nil *Capture is valid and does nothing.
package capture
