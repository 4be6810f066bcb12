// swift-tools-version:6.0
import PackageDescription

// Linux only: the kernels call Glibc, libgomp and Debian's oneDNN 2.6 (no Apple platform is claimed).
// Layers depend one way: Core → NN → Optim → Data → Learner → Vision → Deploy → CLI (the HTTP server lives in the CLI).
// C libraries (oneDNN, Open MPI, zlib, Cairo, TurboJPEG, libpng) sit behind system-library targets with a module map and a shim.
// Swift 5 language mode: the engine shares C pointers and per-shape kernel caches across
// OpenMP threads, which Swift 6's Sendable checking cannot express without noise.

// Release builds target AVX2/FMA (every machine SwiftAI runs on has them; oneDNN picks AVX-512 at run time
// where present): the elementwise, pooling and batch-norm loops vectorise 8 floats wide.
let vectorise: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"], .when(configuration: .release))]

let package = Package(
    name: "SwiftAI",
    products: [
        .library(name: "SwiftAICore", targets: ["SwiftAICore"]),
        .library(name: "SwiftAINN", targets: ["SwiftAINN"]),
        .library(name: "SwiftAIOptim", targets: ["SwiftAIOptim"]),
        .library(name: "SwiftAIData", targets: ["SwiftAIData"]),
        .library(name: "SwiftAILearner", targets: ["SwiftAILearner"]),
        .library(name: "SwiftAIVision", targets: ["SwiftAIVision"]),
        .library(name: "SwiftAIDeploy", targets: ["SwiftAIDeploy"]),
        .executable(name: "swiftai", targets: ["swiftai"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1")
    ],
    targets: [
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL"),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .systemLibrary(name: "CCairo", path: "Sources/CCairo"),
        .systemLibrary(name: "CTurboJPEG", path: "Sources/CTurboJPEG"),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG"),
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c"),
        .target(name: "SwiftAICore", dependencies: ["CDNNL", "CMPI"], swiftSettings: vectorise),
        .target(name: "SwiftAINN", dependencies: ["SwiftAICore"], swiftSettings: vectorise),
        .target(name: "SwiftAIOptim", dependencies: ["SwiftAINN"], swiftSettings: vectorise),
        .target(name: "SwiftAIData", dependencies: ["SwiftAICore", "CZlib"], swiftSettings: vectorise),
        .target(
            name: "SwiftAILearner", dependencies: ["SwiftAICore", "SwiftAINN", "SwiftAIOptim", "SwiftAIData", "CCairo"],
            swiftSettings: vectorise),
        .target(
            name: "SwiftAIVision",
            dependencies: ["SwiftAICore", "SwiftAIData", "SwiftAILearner", "CTurboJPEG", "CPNG", "CCairo"],
            swiftSettings: vectorise),
        .target(
            name: "SwiftAIDeploy",
            dependencies: [
                "SwiftAICore", "SwiftAINN", "SwiftAIData", "SwiftAILearner", "SwiftAIVision",
                .product(name: "SwiftProtobuf", package: "swift-protobuf")
            ], exclude: ["ONNX/onnx.proto"], swiftSettings: vectorise),
        .executableTarget(
            name: "swiftai",
            dependencies: [
                "SwiftAICore", "SwiftAINN", "SwiftAIOptim", "SwiftAIData", "SwiftAILearner", "SwiftAIVision",
                "SwiftAIDeploy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird")
            ]),
        .target(
            name: "SwiftAITestSupport", dependencies: ["SwiftAICore", "SwiftAINN", "SwiftAIData"],
            path: "Tests/SwiftAITestSupport"),
        .testTarget(
            name: "SwiftAICoreTests", dependencies: ["SwiftAICore", "SwiftAITestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "SwiftAINNTests", dependencies: ["SwiftAINN", "SwiftAITestSupport"], exclude: ["Fixtures"]),
        .testTarget(
            name: "SwiftAIOptimTests",
            dependencies: ["SwiftAIOptim", "SwiftAINN", "SwiftAIData", "SwiftAITestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "SwiftAIDataTests", dependencies: ["SwiftAIData", "SwiftAITestSupport"]),
        .testTarget(name: "SwiftAILearnerTests", dependencies: ["SwiftAILearner", "SwiftAITestSupport"]),
        .testTarget(
            name: "SwiftAIVisionTests",
            dependencies: ["SwiftAIVision", "SwiftAINN", "SwiftAILearner", "SwiftAITestSupport"],
            exclude: ["Fixtures"]),
        .testTarget(
            name: "SwiftAIDeployTests",
            dependencies: [
                "SwiftAIDeploy", "SwiftAIVision", "SwiftAINN", "SwiftAILearner",
                "SwiftAITestSupport"
            ]),
        // Distributed scenarios the MPI tests start under `mpirun`, one process per rank.
        .executableTarget(
            name: "swiftai-mpi-check",
            dependencies: ["SwiftAICore", "SwiftAINN", "SwiftAIOptim", "SwiftAIData", "SwiftAILearner"],
            path: "Tests/MPICheck"),
        // Runs the built `swiftai` and `swiftai-mpi-check` binaries (the dependencies make sure they are built) as
        // subprocesses.
        .testTarget(name: "SwiftAICLITests", dependencies: ["swiftai", "swiftai-mpi-check"])
    ],
    swiftLanguageModes: [.v5]
)
