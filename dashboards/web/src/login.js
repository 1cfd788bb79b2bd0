// The sign-in form: the token goes in an Authorization header (never in a URL or a cookie);
// the server answers with an HttpOnly session cookie.
const form = document.getElementById('login-form');
const err = document.getElementById('login-error');
form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  err.textContent = '';
  const token = document.getElementById('token').value.trim();
  try {
    const r = await fetch('/portal/login', {
      method: 'POST',
      headers: { Authorization: 'Bearer ' + token },
      credentials: 'same-origin',
    });
    if (r.ok) {
      location.href = '/portal';
      return;
    }
    let msg = r.status + ' ' + r.statusText;
    try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
    err.textContent = 'Sign-in refused: ' + msg;
  } catch (e) {
    err.textContent = 'Cannot reach the server: ' + e;
  }
});
