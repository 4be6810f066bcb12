// swift-tools-version:6.0
import PackageDescription

// libFuzzer harnesses for SwiftAI's file readers, one executable per reader (see docs/fuzzing.md).
// Each harness defines LLVMFuzzerTestOneInput and a `@main` that runs libFuzzer's driver on it (FuzzSupport).
// Build with `swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library` (scripts/fuzz.sh
// does); a checkout in a folder named `fuzz` clashes with this package's name (docs/fuzzing.md).

let package = Package(
    name: "SwiftAIFuzz",
    dependencies: [.package(name: "SwiftAI", path: "..")],
    targets: [
        .systemLibrary(name: "CLibFuzzer", path: "Sources/CLibFuzzer"),
        .target(name: "FuzzSupport", dependencies: ["CLibFuzzer"]),
        .executableTarget(name: "FuzzSafetensors", dependencies: ["FuzzSupport", .product(name: "SwiftAICore", package: "SwiftAI")]),
        .executableTarget(name: "FuzzBundle", dependencies: ["FuzzSupport", .product(name: "SwiftAIDeploy", package: "SwiftAI")]),
        .executableTarget(name: "FuzzIDX", dependencies: ["FuzzSupport", .product(name: "SwiftAIData", package: "SwiftAI")]),
        .executableTarget(name: "FuzzImage", dependencies: ["FuzzSupport", .product(name: "SwiftAIVision", package: "SwiftAI")]),
        .executableTarget(name: "FuzzPth", dependencies: ["FuzzSupport", .product(name: "SwiftAICore", package: "SwiftAI")]),
    ],
    swiftLanguageModes: [.v5]
)
