// The order form: show only the fields of the chosen kind (without JavaScript all are shown).
(function () {
  "use strict";
  var form = document.querySelector(".order-form");
  if (!form) return;
  function sync() {
    var checked = form.querySelector('input[name="kind"]:checked');
    var kind = checked ? checked.value : "";
    form.querySelectorAll("[data-kind]").forEach(function (el) {
      el.hidden = kind !== "" && el.getAttribute("data-kind") !== kind;
    });
  }
  form.addEventListener("change", function (e) {
    if (e.target.name === "kind") sync();
  });
  sync();
  // Django marks every field with an error aria-invalid: start at the first one.
  var firstInvalid = form.querySelector('[aria-invalid="true"]:not([type="hidden"])');
  if (firstInvalid) firstInvalid.focus();
})();
