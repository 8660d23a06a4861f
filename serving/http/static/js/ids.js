// Request ids (idempotency keys) for CreateRound: 128 random bits in hex. crypto.randomUUID exists only in secure
// contexts (https or localhost); crypto.getRandomValues exists everywhere, so a plain-http origin works too.

export function requestId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
