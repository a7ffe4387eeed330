// Small behaviours htmx does not cover; every page works without them, minus the comfort.
document.addEventListener("change", (event) => {
  // A confirmation checkbox enables the button it names (the Reset sync dialog).
  const box = event.target;
  if (box instanceof HTMLInputElement && box.dataset.enables) {
    const button = document.getElementById(box.dataset.enables);
    if (button) button.disabled = !box.checked;
  }
});
document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-opens]");
  if (opener) {
    const dialog = document.getElementById(opener.dataset.opens);
    if (dialog) { event.preventDefault(); dialog.showModal(); }
  }
  const closer = event.target.closest("[data-closes]");
  if (closer) { closer.closest("dialog")?.close(); }
});
// A dialog loaded by htmx opens as soon as it arrives.
document.addEventListener("htmx:afterSwap", (event) => {
  const dialog = event.detail.target.querySelector("dialog[data-open-on-load]");
  if (dialog && !dialog.open) dialog.showModal();
});
