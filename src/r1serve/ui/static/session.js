// Who is logged in: the login state the page shares between views, and the account calls.

import { apiJson, setCsrfToken } from "./api.js";

let current = null; // { id, username, role, method, csrf_token, auth_enabled } or null
const listeners = new Set();

/** The logged-in user, or null. */
export function currentUser() {
  return current;
}

export function isAdmin() {
  return Boolean(current && current.role === "admin");
}

/** Call listener(user) whenever the user logs in or out; returns an unsubscribe function. */
export function onUserChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function setUser(user) {
  current = user;
  setCsrfToken(user ? user.csrf_token : null);
  for (const listener of listeners) listener(user);
}

/** Ask the server who we are (the session cookie is HttpOnly, so only it can tell). */
export async function loadCurrentUser() {
  try {
    setUser(await apiJson("GET", "/api/auth/me"));
  } catch (error) {
    if (error.status !== 401) throw error;
    setUser(null);
  }
  return current;
}

export async function logIn(username, password) {
  const body = await apiJson("POST", "/api/auth/login", { username, password });
  setUser(body.user);
  return current;
}

export async function logOut() {
  try {
    await apiJson("POST", "/api/auth/logout");
  } finally {
    setUser(null);
  }
}

export async function changePassword(currentPassword, newPassword) {
  const user = await apiJson("POST", "/api/auth/password", {
    current_password: currentPassword,
    new_password: newPassword,
  });
  setUser(user);
}

/** Forget the user after the server said 401 (session ended elsewhere). */
export function forgetUser() {
  if (current) setUser(null);
}
