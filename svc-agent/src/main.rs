fn main() {
    let dir = std::path::Path::new("/sys/fs/bpf/svc-probe");
    match svc_agent::dataplane::Datapath::load(dir) {
        Ok(_) => println!("loaded"),
        Err(e) => println!("error: {e}\n{e:?}"),
    }
}
