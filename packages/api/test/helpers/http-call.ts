/**
 * One HTTP call to a running hako-api (the whole-stack tests): bearer `token`, and a body sent by
 * its kind — JSON for an object, text/plain for a string, application/octet-stream for bytes,
 * multipart for FormData (fetch sets its boundary). `headers` win over these defaults (a tar's
 * content type, Last-Event-ID). `json` is the parsed answer, `{}` for an event stream or a file.
 */
export interface ApiAnswer {
  status: number;
  json: Record<string, unknown>;
  text: string;
  headers: Headers;
}

export async function callApi(
  base: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<ApiAnswer> {
  const [contentType, payload] = encodeBody(body);
  const res = await fetch(`${base}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(contentType === undefined ? {} : { 'content-type': contentType }),
      ...headers,
    },
    body: payload,
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // an event stream, a file or no body
  }
  return { status: res.status, json, text, headers: res.headers };
}

function encodeBody(body: unknown): [contentType: string | undefined, payload: RequestInit['body']] {
  if (body === undefined) return [undefined, undefined];
  if (body instanceof FormData) return [undefined, body];
  if (typeof body === 'string') return ['text/plain', body];
  if (body instanceof Uint8Array) return ['application/octet-stream', body];
  return ['application/json', JSON.stringify(body)];
}
