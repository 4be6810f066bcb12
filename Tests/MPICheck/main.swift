// `swiftai-mpi-check SCENARIO [ARGS…]`: distributed scenarios the tests start under `mpirun` (MPI initialises once
// per process, so each scenario is a process of its own). A scenario prints one JSON line (rank 0) and exits 0, or
// prints what went wrong and exits 1. `SwiftAICLITests/MPITests.swift` runs them.
import Foundation
import SwiftAICore

let scenarios: [String: ([String]) throws -> Void] = [
    "collectives": collectives,
    "train": train,
    "syncBatchNorm": syncBatchNorm
]

let arguments = Array(CommandLine.arguments.dropFirst())
guard let name = arguments.first, let scenario = scenarios[name] else {
    FileHandle.standardError.write(Data("usage: swiftai-mpi-check \(scenarios.keys.sorted()) [args]\n".utf8))
    exit(2)
}
do {
    try scenario(Array(arguments.dropFirst()))
    if let g = try? ProcessGroup.fromEnvironment() { g.finalize() }
} catch {
    FileHandle.standardError.write(Data("\(name): \(error)\n".utf8))
    exit(1)
}
