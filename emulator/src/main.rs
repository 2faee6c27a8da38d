fn main() {
    println!("iothub-emulator {}", env!("CARGO_PKG_VERSION"));
}
