"""Where a component's code comes from: source kinds, the transport check, downloads, fetching into the
source cache, recorded resolutions, index reads, Rust crates, patches."""
