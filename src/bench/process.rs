//! What the kernel says about processes and sockets: peak resident memory
//! of this process, and the bytes that crossed a server's TCP connections.
//! Linux only; elsewhere every value is `None`.

use std::process::Command;

/// Returns the peak resident set size (`VmHWM`) of this process in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    proc_field_kib(&status, "VmHWM:").map(|kib| kib * 1024)
}

/// Returns the bytes sent plus received over every established TCP
/// connection whose local port is `port` (a server's side of its
/// connections), as the kernel counts them (`tcp_info`, shown by `ss`): the
/// payload with all its TLS and HTTP/2 framing, each byte once.
pub fn server_socket_bytes(port: u16) -> Option<u64> {
    let output = Command::new("ss")
        .args(["-tinH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    sum_socket_bytes(&String::from_utf8_lossy(&output.stdout))
}

/// Returns the sum of the `bytes_sent:` and `bytes_received:` counters in
/// `ss -i` output, or `None` if it has none.
fn sum_socket_bytes(ss_output: &str) -> Option<u64> {
    let counters: Vec<u64> = ss_output
        .split_whitespace()
        .filter_map(|token| {
            token
                .strip_prefix("bytes_sent:")
                .or_else(|| token.strip_prefix("bytes_received:"))
        })
        .filter_map(|value| value.parse().ok())
        .collect();
    (!counters.is_empty()).then(|| counters.iter().sum())
}

/// Returns the value in KiB of a `Name:   123 kB` line of a /proc status file.
fn proc_field_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_memory_line_is_parsed_in_kib() {
        let status = "Name:\tfedshield\nVmPeak:\t  200 kB\nVmHWM:\t    1536 kB\n";
        assert_eq!(proc_field_kib(status, "VmHWM:"), Some(1536));
        assert_eq!(proc_field_kib(status, "VmRSS:"), None);
    }

    #[test]
    fn socket_counters_of_every_connection_are_summed() {
        let output = "0 0 127.0.0.1:7070 127.0.0.1:50000\n\t cubic bytes_sent:1000 bytes_acked:1000 bytes_received:200 segs_out:3\n\
                      0 0 127.0.0.1:7070 127.0.0.1:50002\n\t cubic bytes_sent:30 bytes_received:4 segs_out:3\n";
        assert_eq!(sum_socket_bytes(output), Some(1234));
        assert_eq!(sum_socket_bytes(""), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_peak() {
        assert!(peak_rss_bytes().is_some_and(|bytes| bytes > 0));
    }
}
