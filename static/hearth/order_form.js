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
  var firstError = form.querySelector(".field-error");
  if (firstError) {
    var field = firstError.closest("td, .field");
    var input = field && field.querySelector("input, select, textarea");
    if (input) input.focus();
  }
})();
