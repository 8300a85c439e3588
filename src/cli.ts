#!/usr/bin/env node
// Entry point of the `datakey` command; subcommands are added as the parts land.
console.error('datakey: no subcommands yet');
process.exitCode = 2;
