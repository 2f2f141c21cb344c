// Compiles the cxx bridge and the hand-written C++11 wrapper behind
// include/msgflo/msgflo.hpp into this static library.
fn main() {
    cxx_build::bridge("src/lib.rs")
        .file("src/msgflo.cpp")
        .include("include")
        .std("c++11")
        .compile("msgflo-cpp-bridge");
    println!("cargo:rerun-if-changed=src/msgflo.cpp");
    println!("cargo:rerun-if-changed=include/msgflo/msgflo.hpp");
}
