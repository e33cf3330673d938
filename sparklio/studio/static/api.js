// The studio's one way to the JSON API: the session cookie (same origin), and on unsafe
// methods the X-CSRF-Token header the API asks for, from the sparklio_csrf cookie.

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...value] = part.trim().split("=");
    if (key === name) return decodeURIComponent(value.join("="));
  }
  return null;
}

/** The message of an API error body ({"error": {"message"}} or {"message"}). */
function messageOf(body, status) {
  const error = body && body.error;
  const message = (error && error.message) || (body && body.message) || (typeof error === "string" && error);
  return message || `HTTP ${status}`;
}

/** Call the API; the parsed JSON (or null for 204). Throws ApiError for a non-2xx answer. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (UNSAFE.has(method)) {
    const token = cookie("sparklio_csrf");
    if (token) headers["X-CSRF-Token"] = token;
  }
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, messageOf(data, response.status), data);
  return data;
}
