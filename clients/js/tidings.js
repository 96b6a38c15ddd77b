// @ts-check
// The SDK lives in the Python package (src/tidings/sdk/tidings.js) so that every Tidings server serves it
// at /sdk/tidings.js without Node at run time; this package re-exports that one file.
export * from "../../src/tidings/sdk/tidings.js";
