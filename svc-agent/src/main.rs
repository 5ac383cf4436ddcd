fn main() { println!("{}", svc_agent::EBPF_OBJECT.len()); }
