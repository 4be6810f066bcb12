import CLibFuzzer
import Foundation

/// Runs libFuzzer with the process's arguments, calling `testOneInput` with each input, and exits with its status.
///
/// SwiftPM links executables with their own `main`, so libFuzzer's is not used: each harness's `@main` calls this.
public func runLibFuzzer(_ testOneInput: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> Never {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, testOneInput))
}

private let printsErrors = ProcessInfo.processInfo.environment["FUZZ_PRINT_ERRORS"] == "1"

/// A reader's typed error is the expected answer to a bad input; with `FUZZ_PRINT_ERRORS=1` it is printed (to
/// check what the seeds or a reproducer exercise, e.g. `FUZZ_PRINT_ERRORS=1 .build/release/FuzzPth corpus/pth/*`).
public func expected(_ error: Error) {
    if printsErrors { print("error: \(error)") }
}
