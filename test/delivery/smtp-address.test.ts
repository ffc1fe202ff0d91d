// Addresses at IP literals go on the SMTP wire in brackets (RFC 5321 §4.1.3), as a peer parses them.
import { expect, test } from "bun:test";
import { smtpAddress } from "../../src/delivery/transports/smtp.ts";

test.each([
  ["u@192.0.2.7", "u@[192.0.2.7]"],
  ["u@2001:db8::7", "u@[IPv6:2001:db8::7]"],
  ["u@example.org", "u@example.org"],
  ["a@b@192.0.2.7", "a@b@[192.0.2.7]"],
  ["", ""],
])("%s -> %s", (ours, wire) => {
  expect(smtpAddress(ours)).toBe(wire);
});
